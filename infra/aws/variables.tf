# The first block of variables is shared, name for name, with infra/gcp (tests/test_infra.py checks it).

variable "name" {
  description = "Prefix of every resource name; also the Stack tag."
  type        = string
  default     = "vidcore"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name: 2-21 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "region" {
  description = "AWS region, e.g. us-east-1 (where the prices in infra/README.md are quoted)."
  type        = string
  default     = "us-east-1"
}

variable "instance_type" {
  description = "GPU instance type: g6e.* (L40S 48 GB, compute capability 8.9), p5.4xlarge (H100 80 GB, 9.0) or p4d.24xlarge (8x A100 40 GB, 8.0)."
  type        = string
  default     = "g6e.xlarge"

  validation {
    condition = contains([
      "g6e.xlarge", "g6e.2xlarge", "g6e.4xlarge", "g6e.8xlarge", "g6e.16xlarge", "g6e.12xlarge",
      "p5.4xlarge", "p4d.24xlarge",
    ], var.instance_type)
    error_message = "instance_type must be one of g6e.xlarge, g6e.2xlarge, g6e.4xlarge, g6e.8xlarge, g6e.16xlarge, g6e.12xlarge, p5.4xlarge, p4d.24xlarge."
  }
}

variable "use_spot" {
  description = "Run on spot capacity (cheaper, can be interrupted: the instance stops and the volumes stay)."
  type        = bool
  default     = false
}

variable "image" {
  description = "Container image built by docker/build.sh: <registry>/vidcore:<version>-<set>, set one of base, wan22, hunyuan, latte, all."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9.-]+(:[0-9]+)?/)?([a-z0-9._-]+/)*vidcore:[0-9]+\\.[0-9]+\\.[0-9]+-(base|wan22|hunyuan|latte|all)$", var.image))
    error_message = "image must be a vidcore image tag from docker/build.sh, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/vidcore:0.1.0-wan22."
  }
}

variable "backend" {
  description = "Backend that `generate` uses when none is given; its weights are downloaded on first use."
  type        = string
  default     = "wan2.2-ti2v-5b"

  validation {
    condition = contains([
      "latte-shapes", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b", "hunyuan-video-t2v", "hunyuan-video-i2v",
    ], var.backend)
    error_message = "backend must be one of latte-shapes, wan2.2-t2v-a14b, wan2.2-i2v-a14b, wan2.2-ti2v-5b, hunyuan-video-t2v, hunyuan-video-i2v."
  }
}

variable "initial_prompt" {
  description = "If set, the host generates one video from this prompt at first boot and syncs it to the bucket."
  type        = string
  default     = ""
}

variable "root_volume_gb" {
  description = "Root volume size (the Deep Learning AMI and the container images live here)."
  type        = number
  default     = 150

  validation {
    condition     = var.root_volume_gb >= 100
    error_message = "root_volume_gb must be at least 100 (AMI plus container images)."
  }
}

variable "model_volume_gb" {
  description = "Model volume size: Hugging Face cache and outputs. Wan2.2 A14B needs about 130 GB, TI2V-5B about 35 GB."
  type        = number
  default     = 500

  validation {
    condition     = var.model_volume_gb >= 50 && var.model_volume_gb <= 16384
    error_message = "model_volume_gb must be between 50 and 16384."
  }
}

variable "bucket_name" {
  description = "Name of the output bucket; empty for <name>-outputs-<random suffix>."
  type        = string
  default     = ""
}

variable "force_destroy_bucket" {
  description = "Let `terraform destroy` delete the bucket even when it still holds videos."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Extra tags (AWS) or labels (GCP) on every resource."
  type        = map(string)
  default     = {}
}

# --- AWS only ---------------------------------------------------------------------------------

variable "availability_zone" {
  description = "Availability zone; empty for the first zone of the region that offers instance_type."
  type        = string
  default     = ""
}

variable "vpc_cidr" {
  description = "CIDR of the VPC created for the host (a private subnet for the instance, a public one for the NAT gateway)."
  type        = string
  default     = "10.42.0.0/16"
}

variable "ecr_repository_arn" {
  description = "ARN of a private ECR repository holding the image; empty when the image is public. Grants pull on that repository only."
  type        = string
  default     = ""
}

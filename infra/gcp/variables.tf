# The first block of variables is shared, name for name, with infra/aws (tests/test_infra.py checks it).

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
  description = "GCP region, e.g. us-central1 (where the prices in infra/README.md are quoted)."
  type        = string
  default     = "us-central1"
}

variable "instance_type" {
  description = "GPU machine type: g2-standard-* (1-8x L4 24 GB, compute capability 8.9), a2-ultragpu-1g (A100 80 GB, 8.0) or a3-highgpu-1g (H100 80 GB, 9.0)."
  type        = string
  default     = "g2-standard-8"

  validation {
    condition = contains([
      "g2-standard-4", "g2-standard-8", "g2-standard-12", "g2-standard-16", "g2-standard-24", "g2-standard-32",
      "g2-standard-48", "a2-ultragpu-1g", "a3-highgpu-1g",
    ], var.instance_type)
    error_message = "instance_type must be one of g2-standard-4, -8, -12, -16, -24, -32, -48, a2-ultragpu-1g, a3-highgpu-1g."
  }
}

variable "use_spot" {
  description = "Run on spot capacity (cheaper, can be preempted: the VM stops and the disks stay)."
  type        = bool
  default     = false
}

variable "image" {
  description = "Container image built by docker/build.sh: <registry>/vidcore:<version>-<set>, set one of base, wan22, hunyuan, latte, all."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9.-]+(:[0-9]+)?/)?([a-z0-9._-]+/)*vidcore:[0-9]+\\.[0-9]+\\.[0-9]+-(base|wan22|hunyuan|latte|all)$", var.image))
    error_message = "image must be a vidcore image tag from docker/build.sh, e.g. us-central1-docker.pkg.dev/my-project/vidcore/vidcore:0.1.0-wan22."
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
  description = "Boot disk size (the Deep Learning VM image and the container images live here)."
  type        = number
  default     = 150

  validation {
    condition     = var.root_volume_gb >= 100
    error_message = "root_volume_gb must be at least 100 (AMI plus container images)."
  }
}

variable "model_volume_gb" {
  description = "Model disk size: Hugging Face cache and outputs. Wan2.2 A14B needs about 130 GB, TI2V-5B about 35 GB."
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

# --- GCP only ---------------------------------------------------------------------------------

variable "project" {
  description = "GCP project id."
  type        = string
}

variable "zone" {
  description = "Zone within region that offers instance_type, e.g. us-central1-a."
  type        = string
  default     = "us-central1-a"
}

variable "subnet_cidr" {
  description = "CIDR of the subnet created for the host."
  type        = string
  default     = "10.42.0.0/24"
}

variable "vm_image" {
  description = "Boot image: a Deep Learning VM image family with the NVIDIA driver (project deeplearning-platform-release)."
  type        = string
  default     = "projects/deeplearning-platform-release/global/images/family/common-cu128-ubuntu-2204-nvidia-570"
}

variable "secure_boot" {
  description = "Shielded VM Secure Boot. Off by default: the NVIDIA kernel modules of the Deep Learning VM images are not signed for it, and the GPU would not load. vTPM and integrity monitoring stay on."
  type        = bool
  default     = false
}

variable "enable_iap_ssh" {
  description = "Allow SSH through Identity-Aware Proxy only (source 35.235.240.0/20, port 22): the one way in, with IAM and OS Login."
  type        = bool
  default     = true
}

variable "artifact_registry_repository" {
  description = "Artifact Registry repository holding the image, as projects/P/locations/L/repositories/R; empty when the image is public. Grants read on that repository only."
  type        = string
  default     = ""
}

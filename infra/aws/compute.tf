# The GPU host: the latest Deep Learning Base GPU AMI (NVIDIA driver, Docker, NVIDIA container
# toolkit, SSM agent), no public IP, no key pair, IMDSv2 only, encrypted gp3 volumes.

data "aws_ami" "dlami" {
  most_recent = true
  owners      = ["amazon"]

  filter {
    name   = "name"
    values = ["Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }

  filter {
    name   = "state"
    values = ["available"]
  }
}

locals {
  registry_host = split("/", var.image)[0]
  bootstrap = templatefile("${path.module}/../templates/bootstrap.sh.tftpl", {
    cloud        = "S3"
    image        = var.image
    backend      = var.backend
    prompt_b64   = base64encode(var.initial_prompt)
    model_device = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${replace(aws_ebs_volume.models.id, "-", "")}"
    registry_login = (var.ecr_repository_arn != ""
      ? "aws ecr get-login-password --region ${var.region} | docker login --username AWS --password-stdin ${local.registry_host}"
    : "# public image: no registry login")
    api_key_command = "aws ssm get-parameter --region ${var.region} --name ${aws_ssm_parameter.api_key.name} --with-decryption --query Parameter.Value --output text"
    sync_command    = "aws s3 sync /mnt/vidcore/outputs s3://${aws_s3_bucket.outputs.id}/outputs/ --region ${var.region} --only-show-errors --no-progress --exclude '.*' --exclude '*/.*'"
  })
}

resource "aws_instance" "host" {
  ami                         = data.aws_ami.dlami.id
  instance_type               = var.instance_type
  subnet_id                   = aws_subnet.private.id
  vpc_security_group_ids      = [aws_security_group.host.id]
  iam_instance_profile        = aws_iam_instance_profile.host.name
  associate_public_ip_address = false
  ebs_optimized               = true
  monitoring                  = true
  user_data_base64            = base64gzip(local.bootstrap)
  user_data_replace_on_change = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1          # containers on the bridge network cannot reach the role's credentials
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_gb
    encrypted             = true
    kms_key_id            = aws_kms_key.this.arn
    delete_on_termination = true
  }

  dynamic "instance_market_options" {
    for_each = var.use_spot ? [1] : []

    content {
      market_type = "spot"

      spot_options {
        spot_instance_type             = "persistent"
        instance_interruption_behavior = "stop"
      }
    }
  }

  tags = { Name = "${var.name}-host" }

  depends_on = [aws_route_table_association.private, aws_nat_gateway.this]
}

# One customer-managed KMS key encrypts the root and model volumes, the output bucket and the
# flow logs. The output bucket is private, versioned, TLS-only, with every public access blocked.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id  = data.aws_caller_identity.current.account_id
  partition   = data.aws_partition.current.partition
  bucket_name = var.bucket_name != "" ? var.bucket_name : "${var.name}-outputs-${random_id.bucket.hex}"
}

resource "random_id" "bucket" {
  byte_length = 4
}

# Key policy without wildcard actions: the account's IAM administrators manage and use the key
# (EC2 launches need the grant actions), CloudWatch Logs may encrypt this stack's flow logs only.
# In a key policy the resource "*" means this key.
locals {
  key_admin_actions = [
    "kms:CancelKeyDeletion", "kms:CreateAlias", "kms:DeleteAlias", "kms:DescribeKey", "kms:DisableKey",
    "kms:DisableKeyRotation", "kms:EnableKey", "kms:EnableKeyRotation", "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus", "kms:ListAliases", "kms:ListGrants", "kms:ListKeyPolicies",
    "kms:ListResourceTags", "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:TagResource",
    "kms:UntagResource", "kms:UpdateAlias", "kms:UpdateKeyDescription",
    "kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext", "kms:CreateGrant", "kms:RetireGrant", "kms:RevokeGrant",
  ]
  key_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersAndUsesKey"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = local.key_admin_actions
        Resource  = "*"
      },
      {
        Sid       = "FlowLogsEncrypt"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey", "kms:DescribeKey"]
        Resource  = "*"
        Condition = {
          ArnEquals = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/vidcore/${var.name}/vpc-flow"
          }
        }
      },
    ]
  }
}

resource "aws_kms_key" "this" {
  description             = "vidcore ${var.name}: volumes, output bucket, flow logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = jsonencode(local.key_policy)
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}-vidcore"
  target_key_id = aws_kms_key.this.key_id
}

# --- output bucket -----------------------------------------------------------------------------

resource "aws_s3_bucket" "outputs" {
  #checkov:skip=CKV_AWS_18:Server access logs need a second bucket; this one only receives videos from one role, and CloudTrail data events are the audit trail if one is required.
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles storage cost for outputs that the run records next to them can regenerate.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events; operators read the videos with aws s3 cp.
  bucket        = local.bucket_name
  force_destroy = var.force_destroy_bucket
}

resource "aws_s3_bucket_ownership_controls" "outputs" {
  bucket = aws_s3_bucket.outputs.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "outputs" {
  bucket                  = aws_s3_bucket.outputs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "outputs" {
  bucket = aws_s3_bucket.outputs.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "outputs" {
  bucket = aws_s3_bucket.outputs.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "outputs" {
  bucket = aws_s3_bucket.outputs.id

  rule {
    id     = "tidy"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }

    noncurrent_version_expiration {
      noncurrent_days = 30
    }
  }

  depends_on = [aws_s3_bucket_versioning.outputs]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"] # a deny: every request over plain HTTP is refused
    resources = [
      aws_s3_bucket.outputs.arn,
      "${aws_s3_bucket.outputs.arn}/*",
    ]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "outputs" {
  bucket     = aws_s3_bucket.outputs.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.outputs]
}

# --- model volume: Hugging Face cache and outputs; survives instance replacement ---------------

resource "aws_ebs_volume" "models" {
  availability_zone = local.zone
  size              = var.model_volume_gb
  type              = "gp3"
  throughput        = 500
  iops              = 6000
  encrypted         = true
  kms_key_id        = aws_kms_key.this.arn

  tags = { Name = "${var.name}-models" }
}

resource "aws_volume_attachment" "models" {
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.models.id
  instance_id = aws_instance.host.id
}

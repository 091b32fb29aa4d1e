# A customer-managed key (rotated every 90 days) encrypts the boot and model disks and the output
# bucket; the bucket has uniform bucket-level access, public access prevention and versioning.

data "google_project" "this" {}

data "google_storage_project_service_account" "gcs" {}

resource "random_id" "suffix" {
  byte_length = 4
}

locals {
  bucket_name     = var.bucket_name != "" ? var.bucket_name : "${var.name}-outputs-${random_id.suffix.hex}"
  compute_service = "serviceAccount:service-${data.google_project.this.number}@compute-system.iam.gserviceaccount.com"
}

resource "google_kms_key_ring" "this" {
  name     = "${var.name}-${random_id.suffix.hex}"
  location = var.region
}

resource "google_kms_crypto_key" "this" {
  #checkov:skip=CKV_GCP_82:prevent_destroy would make `terraform destroy` fail; Cloud KMS never deletes a key, destroy only schedules its versions for destruction after destroy_scheduled_duration, and the bucket and disks that use it are destroyed first.
  name                       = "${var.name}-data"
  key_ring                   = google_kms_key_ring.this.id
  rotation_period            = "7776000s"
  purpose                    = "ENCRYPT_DECRYPT"
  destroy_scheduled_duration = "2592000s"
}

resource "google_kms_crypto_key_iam_member" "compute" {
  crypto_key_id = google_kms_crypto_key.this.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.compute_service
}

resource "google_kms_crypto_key_iam_member" "gcs" {
  crypto_key_id = google_kms_crypto_key.this.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_bucket" "outputs" {
  #checkov:skip=CKV_GCP_62:Access logs need a second bucket; this one only receives videos from one service account, and Cloud Audit Logs data access logs are the trail if one is required.
  name                        = local.bucket_name
  location                    = var.region
  force_destroy               = var.force_destroy_bucket
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = google_kms_crypto_key.this.id
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.gcs]
}

resource "google_compute_disk" "models" {
  name   = "${var.name}-models"
  zone   = var.zone
  type   = "pd-balanced"
  size   = var.model_volume_gb
  labels = local.labels

  disk_encryption_key {
    kms_key_self_link = google_kms_crypto_key.this.id
  }

  depends_on = [google_kms_crypto_key_iam_member.compute]
}

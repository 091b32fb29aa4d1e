# The VM's service account may write videos into the output bucket (create and list, never read or
# delete), read the server's API key secret (serve.tf) and, optionally, read the image from one
# Artifact Registry repository. Nothing else.

resource "google_service_account" "host" {
  account_id   = "${var.name}-host"
  display_name = "vidcore GPU host ${var.name}"
}

resource "google_storage_bucket_iam_member" "write_outputs" {
  bucket = google_storage_bucket.outputs.name
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${google_service_account.host.email}"
}

# `gcloud storage rsync` lists the destination to skip what is already there.
resource "google_storage_bucket_iam_member" "list_outputs" {
  bucket = google_storage_bucket.outputs.name
  role   = "roles/storage.legacyBucketReader"
  member = "serviceAccount:${google_service_account.host.email}"
}

resource "google_artifact_registry_repository_iam_member" "pull_image" {
  count      = var.artifact_registry_repository != "" ? 1 : 0
  project    = split("/", var.artifact_registry_repository)[1]
  location   = split("/", var.artifact_registry_repository)[3]
  repository = split("/", var.artifact_registry_repository)[5]
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.host.email}"
}

# vidcore serve on the VM: its API key, made here and kept in Secret Manager. The VM's service account
# may read this one secret (secretAccessor on it, nothing project-wide); you read it with the
# api_key_command output. The value is also in the Terraform state, as every generated secret is:
# keep the state private (an encrypted remote backend).
# The server listens on the VM's loopback only; tunnel_command forwards it to your machine over SSH
# through Identity-Aware Proxy (the existing IAP rule on port 22), so no other port is opened.

resource "random_password" "api_key" {
  length  = 48
  special = false
}

resource "google_secret_manager_secret" "api_key" {
  secret_id = "${var.name}-api-key"
  labels    = local.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "api_key" {
  secret      = google_secret_manager_secret.api_key.id
  secret_data = random_password.api_key.result
}

resource "google_secret_manager_secret_iam_member" "read_api_key" {
  secret_id = google_secret_manager_secret.api_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.host.email}"
}

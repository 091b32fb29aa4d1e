output "instance_id" {
  description = "The GPU VM."
  value       = google_compute_instance.host.instance_id
}

output "connect_command" {
  description = "Open a shell on the VM through Identity-Aware Proxy (no external IP; needs roles/iap.tunnelResourceAccessor and OS Login)."
  value       = "gcloud compute ssh ${google_compute_instance.host.name} --project ${var.project} --zone ${var.zone} --tunnel-through-iap"
}

output "bucket" {
  description = "Where the VM copies its videos and run records."
  value       = google_storage_bucket.outputs.name
}

output "outputs_uri" {
  description = "List the videos with: gcloud storage ls <this>"
  value       = "gs://${google_storage_bucket.outputs.name}/outputs/"
}

output "tunnel_command" {
  description = "Forward the server (vidcore serve, on the VM's loopback) to http://127.0.0.1:8000 on your machine over SSH through IAP; keep it running while you use the API."
  value       = "gcloud compute ssh ${google_compute_instance.host.name} --project ${var.project} --zone ${var.zone} --tunnel-through-iap -- -N -L 8000:127.0.0.1:8000"
}

output "api_key_command" {
  description = "Print the server's API key (send it as Authorization: Bearer KEY)."
  value       = "gcloud secrets versions access latest --secret=${google_secret_manager_secret.api_key.secret_id} --project=${var.project}"
}

output "api_url" {
  description = "The server's address on your machine while tunnel_command runs (the playground page is at /)."
  value       = "http://127.0.0.1:8000"
}

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

# The GPU VM: a Deep Learning VM image (NVIDIA driver, Docker), no external IP, Shielded VM (vTPM,
# integrity monitoring), OS Login, no project-wide SSH keys, no serial port, encrypted disks.

locals {
  registry_host = split("/", var.image)[0]
  bootstrap = templatefile("${path.module}/../templates/bootstrap.sh.tftpl", {
    cloud        = "GCS"
    image        = var.image
    backend      = var.backend
    prompt_b64   = base64encode(var.initial_prompt)
    model_device = "/dev/disk/by-id/google-models"
    registry_login = (endswith(local.registry_host, "-docker.pkg.dev")
      ? "gcloud auth configure-docker ${local.registry_host} --quiet"
    : "# public image: no registry login")
    api_key_command = "gcloud secrets versions access latest --secret=${google_secret_manager_secret.api_key.secret_id} --project=${var.project}"
    sync_command    = "gcloud storage rsync --recursive --no-clobber --exclude '(^|.*/)[.].*' /mnt/vidcore/outputs gs://${google_storage_bucket.outputs.name}/outputs"
  })
}

resource "google_compute_instance" "host" {
  #checkov:skip=CKV_GCP_38:Customer-supplied (raw) keys would have to live in the Terraform state; the disks use the customer-managed Cloud KMS key instead.
  name                      = "${var.name}-host"
  zone                      = var.zone
  machine_type              = var.instance_type
  tags                      = [local.host_tag]
  labels                    = local.labels
  can_ip_forward            = false
  allow_stopping_for_update = true

  boot_disk {
    kms_key_self_link = google_kms_crypto_key.this.id

    initialize_params {
      image = var.vm_image
      size  = var.root_volume_gb
      type  = "pd-balanced"
    }
  }

  attached_disk {
    source            = google_compute_disk.models.id
    device_name       = "models"
    kms_key_self_link = google_kms_crypto_key.this.id
  }

  network_interface {
    subnetwork = google_compute_subnetwork.this.id
    # no access_config: no external IP
  }

  service_account {
    email  = google_service_account.host.email
    scopes = ["cloud-platform"] # what it may do is decided by its IAM roles above
  }

  shielded_instance_config {
    enable_secure_boot          = var.secure_boot
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  scheduling {
    on_host_maintenance = "TERMINATE" # required with GPUs
    automatic_restart   = !var.use_spot
    preemptible         = var.use_spot
    provisioning_model  = var.use_spot ? "SPOT" : "STANDARD"

    instance_termination_action = var.use_spot ? "STOP" : null
  }

  metadata = {
    block-project-ssh-keys = "true"
    enable-oslogin         = "TRUE"
    serial-port-enable     = "false"
    startup-script         = local.bootstrap
  }

  depends_on = [
    google_compute_router_nat.this,
    google_kms_crypto_key_iam_member.compute,
    google_storage_bucket_iam_member.write_outputs,
    google_secret_manager_secret_iam_member.read_api_key,
    google_secret_manager_secret_version.api_key,
  ]
}

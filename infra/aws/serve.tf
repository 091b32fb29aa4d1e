# vidcore serve on the host: its API key, made here and kept in SSM Parameter Store as a SecureString
# under the stack's KMS key. The host reads it at every start of the server (IAM: this one parameter);
# you read it with the api_key_command output. The value is also in the Terraform state, as every
# generated secret is: keep the state private (an encrypted remote backend).
# The server listens on the host's loopback only; tunnel_command forwards it to your machine through
# SSM (AWS-StartPortForwardingSession), so no inbound rule exists.

resource "random_password" "api_key" {
  length  = 48
  special = false
}

resource "aws_ssm_parameter" "api_key" {
  name        = "/vidcore/${var.name}/api-key"
  description = "API key of vidcore serve on the ${var.name} host (Authorization: Bearer KEY)"
  type        = "SecureString"
  key_id      = aws_kms_key.this.arn
  value       = random_password.api_key.result
}

output "instance_id" {
  description = "The GPU host."
  value       = aws_instance.host.id
}

output "connect_command" {
  description = "Open a shell on the host through SSM Session Manager (needs the session-manager-plugin)."
  value       = "aws ssm start-session --region ${var.region} --target ${aws_instance.host.id}"
}

output "bucket" {
  description = "Where the host copies its videos and run records."
  value       = aws_s3_bucket.outputs.id
}

output "outputs_uri" {
  description = "List the videos with: aws s3 ls <this>"
  value       = "s3://${aws_s3_bucket.outputs.id}/outputs/"
}

output "ami" {
  description = "The Deep Learning Base GPU AMI the host runs."
  value       = "${data.aws_ami.dlami.name} (${data.aws_ami.dlami.id})"
}

output "tunnel_command" {
  description = "Forward the server (vidcore serve, on the host's loopback) to http://127.0.0.1:8000 on your machine through SSM; keep it running while you use the API."
  value       = "aws ssm start-session --region ${var.region} --target ${aws_instance.host.id} --document-name AWS-StartPortForwardingSession --parameters portNumber=8000,localPortNumber=8000"
}

output "api_key_command" {
  description = "Print the server's API key (send it as Authorization: Bearer KEY)."
  value       = "aws ssm get-parameter --region ${var.region} --name ${aws_ssm_parameter.api_key.name} --with-decryption --query Parameter.Value --output text"
}

output "api_url" {
  description = "The server's address on your machine while tunnel_command runs (the playground page is at /)."
  value       = "http://127.0.0.1:8000"
}

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

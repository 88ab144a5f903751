output "task_definition_arn" {
  value = aws_ecs_task_definition.this.arn
}

output "task_role_arn" {
  value = aws_iam_role.task.arn
}

output "execution_role_arn" {
  value = aws_iam_role.execution.arn
}

output "log_group_name" {
  value = aws_cloudwatch_log_group.this.name
}

output "monitoring_role_trust_policy" {
  description = "Trust policy for the role in the monitoring account (lets this task role assume it)."
  value       = data.aws_iam_policy_document.monitoring_trust.json
}

output "monitoring_role_policy" {
  description = "Permissions of the role in the monitoring account: PutMetricData in gatewatch's namespace only."
  value       = data.aws_iam_policy_document.monitoring_put_metrics.json
}

output "quota_reader_policy" {
  description = "Policy for every role gatewatch reads Bedrock quotas through (quota_role_arns, or the deployments' aws_role_name roles): Service Quotas and AWS/Bedrock metrics of that account."
  value       = data.aws_iam_policy_document.quota_reader.json
}

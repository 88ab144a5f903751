output "task_definition_arn" {
  value = module.litellm.task_definition_arn
}

output "monitoring_role_arn" {
  value = aws_iam_role.gatewatch_metrics.arn
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "config_bucket" {
  description = "Bucket with litellm/config.yaml and gatewatch/rules/; gatewatch/gatewatch.yaml is written by the module."
  type        = string
}

variable "secret_arn" {
  description = "Secrets Manager secret with keys master_key, gatewatch_token, generic_logger_headers, webhook_url."
  type        = string
}

variable "gatewatch_image" {
  type = string
}

variable "gatewatch_ecr_repository_arn" {
  type    = string
  default = null
}

variable "monitoring_admin_role_arn" {
  description = "Role Terraform assumes in the monitoring account to create gatewatch's metrics role."
  type        = string
}

variable "bedrock_model_arns" {
  type    = list(string)
  default = []
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "client_cidrs" {
  type = list(string)
}

variable "scraper_cidrs" {
  type = list(string)
}

variable "desired_count" {
  type    = number
  default = 2
}

variable "name" {
  description = "Task definition family, and the prefix of the roles and log group."
  type        = string
  default     = "litellm"
}

variable "config_bucket" {
  description = "S3 bucket holding the LiteLLM config.yaml, gatewatch.yaml and the rule files."
  type        = string
}

variable "litellm_config_key" {
  description = "Key of the proxy's config.yaml (fetched once per task by the init container)."
  type        = string
  default     = "litellm/config.yaml"
}

variable "gatewatch_config_key" {
  description = "Key gatewatch.yaml is written to (read and refreshed by ETag by the sidecar)."
  type        = string
  default     = "gatewatch/gatewatch.yaml"
}

variable "rules_prefix" {
  description = "Prefix of your own rule files (added to the default pack in the image)."
  type        = string
  default     = "gatewatch/rules/"
}

variable "secret_arn" {
  description = "Secrets Manager secret (JSON) with keys master_key, gatewatch_token and generic_logger_headers (\"Authorization=Bearer <gatewatch_token>\") and webhook_url (\"http://127.0.0.1:9464/v1/litellm/alerts?token=<gatewatch_token>\")."
  type        = string
}

variable "litellm_image" {
  description = "LiteLLM proxy image; pin the version you validated."
  type        = string
  default     = "ghcr.io/berriai/litellm:main-v1.108.7"
}

variable "gatewatch_image" {
  description = "gatewatch image (built from this repository's Dockerfile, pushed to your registry)."
  type        = string
}

variable "gatewatch_ecr_repository_arn" {
  description = "ECR repository of the gatewatch image, for the execution role's pull permission (null: image not in ECR)."
  type        = string
  default     = null
}

variable "aws_cli_image" {
  description = "Image of the init container that fetches the LiteLLM config."
  type        = string
  default     = "public.ecr.aws/aws-cli/aws-cli:2.27.50"
}

variable "cpu" {
  type    = number
  default = 2048
}

variable "memory" {
  type    = number
  default = 4096
}

variable "cpu_architecture" {
  type    = string
  default = "X86_64"
}

variable "log_retention_days" {
  type    = number
  default = 30
}

variable "cloudwatch_namespace" {
  description = "CloudWatch namespace of gatewatch's metrics."
  type        = string
  default     = "LiteLLM"
}

variable "monitoring_role_arn" {
  description = "Role in the central monitoring account that gatewatch assumes for PutMetricData. null: EMF lines through the awslogs driver into this account."
  type        = string
  default     = null
}

variable "bedrock_model_arns" {
  description = "Bedrock models (foundation models / inference profiles) the proxy may invoke with the task role."
  type        = list(string)
  default     = []
}

variable "litellm_assume_role_arns" {
  description = "Roles the proxy assumes (litellm_params.aws_role_name) to reach Bedrock in other accounts."
  type        = list(string)
  default     = []
}

variable "quotas_enabled" {
  description = "Bedrock quota headroom (gatewatch quotas:): lets the task role list Service Quotas and read AWS/Bedrock metrics."
  type        = bool
  default     = false
}

variable "quota_role_arns" {
  description = "Account id -> role gatewatch assumes to read that account's quotas (quotas.roles); each role needs the quota_reader_policy output."
  type        = map(string)
  default     = {}
}

variable "refresh_interval" {
  description = "How often gatewatch checks its config and rule files for changes (by ETag)."
  type        = string
  default     = "60s"
}

variable "tags" {
  type    = map(string)
  default = {}
}

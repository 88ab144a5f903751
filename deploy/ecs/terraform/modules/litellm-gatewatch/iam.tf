# Least privilege. ECS gives every container of a task the same task role, so the role is
# the union of what each container needs; each statement says whose it is.

data "aws_iam_policy_document" "ecs_tasks_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# -- task role: what the containers call ------------------------------------------------
data "aws_iam_policy_document" "task" {
  statement {
    sid       = "InitFetchesLiteLLMConfig"
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::${var.config_bucket}/${var.litellm_config_key}"]
  }

  statement {
    sid     = "GatewatchReadsItsConfigAndRules"
    actions = ["s3:GetObject"]
    resources = [
      "arn:aws:s3:::${var.config_bucket}/${var.gatewatch_config_key}",
      "arn:aws:s3:::${var.config_bucket}/${var.rules_prefix}*",
    ]
  }

  statement {
    sid       = "GatewatchListsRuleFiles"
    actions   = ["s3:ListBucket"]
    resources = ["arn:aws:s3:::${var.config_bucket}"]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.rules_prefix}*"]
    }
  }

  dynamic "statement" {
    for_each = var.monitoring_role_arn == null ? [] : [var.monitoring_role_arn]
    content {
      sid       = "GatewatchAssumesMonitoringRole"
      actions   = ["sts:AssumeRole"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = length(var.bedrock_model_arns) == 0 ? [] : [1]
    content {
      sid       = "ProxyInvokesBedrock"
      actions   = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
      resources = var.bedrock_model_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.litellm_assume_role_arns) == 0 ? [] : [1]
    content {
      sid       = "ProxyAssumesBedrockRoles"
      actions   = ["sts:AssumeRole"]
      resources = var.litellm_assume_role_arns
    }
  }
}

# -- Bedrock quota headroom (gatewatch `quotas:`, only with quotas_enabled) -------------------
# ListServiceQuotas and GetMetricData take no resource (AWS service authorization reference),
# hence "*"; GetServiceQuota is scoped to Bedrock's quotas.
data "aws_iam_policy_document" "quota_reader" {
  statement {
    sid       = "GatewatchListsBedrockQuotas"
    actions   = ["servicequotas:ListServiceQuotas"]
    resources = ["*"]
  }
  statement {
    sid       = "GatewatchReadsBedrockQuota"
    actions   = ["servicequotas:GetServiceQuota"]
    resources = ["arn:aws:servicequotas:*:*:bedrock/*"]
  }
  statement {
    sid       = "GatewatchReadsBedrockMetrics"
    actions   = ["cloudwatch:GetMetricData"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "quota_reader" {
  count  = var.quotas_enabled ? 1 : 0
  name   = "${var.name}-quota-reader"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.quota_reader.json
}

data "aws_iam_policy_document" "quota_roles" {
  statement {
    sid       = "GatewatchAssumesQuotaRoles"
    actions   = ["sts:AssumeRole"]
    resources = length(var.quota_role_arns) == 0 ? ["arn:aws:iam::000000000000:role/none"] : values(var.quota_role_arns)
  }
}

resource "aws_iam_role_policy" "quota_roles" {
  count  = var.quotas_enabled && length(var.quota_role_arns) > 0 ? 1 : 0
  name   = "${var.name}-quota-roles"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.quota_roles.json
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_trust.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "task" {
  name   = "${var.name}-task"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# -- execution role: what ECS itself needs to start the task -------------------------------
data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "PullImagesFromEcr"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # this action takes no resource
  }

  dynamic "statement" {
    for_each = var.gatewatch_ecr_repository_arn == null ? [] : [var.gatewatch_ecr_repository_arn]
    content {
      sid       = "PullGatewatchImage"
      actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
      resources = [statement.value]
    }
  }

  statement {
    sid       = "WriteContainerLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }

  statement {
    sid       = "InjectSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.secret_arn]
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_trust.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "execution" {
  name   = "${var.name}-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# -- for the monitoring account: the role gatewatch assumes there ---------------------------
# Create it with a provider for that account (see the example); this module only writes
# the documents, since one provider cannot create resources in two accounts.
data "aws_iam_policy_document" "monitoring_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.task.arn]
    }
  }
}

data "aws_iam_policy_document" "monitoring_put_metrics" {
  statement {
    sid       = "GatewatchPutsMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData takes no resource; the namespace condition scopes it
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.cloudwatch_namespace]
    }
  }
}

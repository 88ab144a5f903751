# LiteLLM proxy + gatewatch sidecar + config init container, as one ECS (Fargate) task.
#
# Start order: the init container copies the proxy's config.yaml from S3 onto a shared volume
# and opens the log volume for writing; gatewatch starts once that SUCCEEDED; the proxy starts
# only once gatewatch is HEALTHY, because LiteLLM never retries a callback POST. On stop ECS
# reverses the order: the proxy stops first (its last callback batch reaches a running
# sidecar), then gatewatch drains, flushes and exits within its stopTimeout.

data "aws_region" "current" {}

locals {
  region        = data.aws_region.current.name
  log_group     = "/ecs/${var.name}"
  rules_url     = "s3://${var.config_bucket}/${var.rules_prefix}"
  gatewatch_url = "s3://${var.config_bucket}/${var.gatewatch_config_key}"
  litellm_url   = "s3://${var.config_bucket}/${var.litellm_config_key}"
  logpipe       = join("\n", [for line in split("\n", file("${path.module}/files/logpipe.py")) : line if !startswith(line, "#") && line != ""])

  log_options = {
    "awslogs-group"  = local.log_group
    "awslogs-region" = local.region
  }

  gatewatch_healthcheck = ["CMD", "python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2).status != 200)"]
  litellm_healthcheck   = ["CMD-SHELL", "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:4000/health/liveliness', timeout=3)\" || exit 1"]

  containers = [
    {
      name        = "litellm-config"
      image       = var.aws_cli_image
      essential   = false
      entryPoint  = ["/bin/sh", "-c"]
      command     = ["set -e; aws s3 cp --only-show-errors \"$LITELLM_CONFIG_URL\" /etc/litellm/config.yaml; chmod 1777 /var/log/litellm"]
      environment = [{ name = "LITELLM_CONFIG_URL", value = local.litellm_url }]
      mountPoints = [
        { sourceVolume = "litellm-config", containerPath = "/etc/litellm" },
        { sourceVolume = "litellm-logs", containerPath = "/var/log/litellm" },
      ]
      memoryReservation = 64
      logConfiguration  = { logDriver = "awslogs", options = merge(local.log_options, { "awslogs-stream-prefix" = "init" }) }
    },
    {
      name          = "gatewatch"
      image         = var.gatewatch_image
      essential     = true
      restartPolicy = { enabled = true, restartAttemptPeriod = 60 }
      portMappings  = [{ name = "gatewatch", containerPort = 9464, protocol = "tcp" }]
      environment = [
        { name = "GATEWATCH_CONFIG", value = local.gatewatch_url },
        { name = "GATEWATCH_RULES_URL", value = local.rules_url },
        { name = "GATEWATCH_STATE_DIR", value = "/var/lib/gatewatch" },
      ]
      secrets = [
        { name = "GATEWATCH_TOKEN", valueFrom = "${var.secret_arn}:gatewatch_token::" },
        { name = "LITELLM_MASTER_KEY", valueFrom = "${var.secret_arn}:master_key::" },
      ]
      mountPoints = [
        { sourceVolume = "litellm-config", containerPath = "/etc/litellm", readOnly = true },
        { sourceVolume = "litellm-logs", containerPath = "/var/log/litellm", readOnly = true },
        { sourceVolume = "gatewatch-state", containerPath = "/var/lib/gatewatch" },
        { sourceVolume = "gatewatch-tmp", containerPath = "/tmp" },
      ]
      readonlyRootFilesystem = true
      dependsOn              = [{ containerName = "litellm-config", condition = "SUCCESS" }]
      healthCheck            = { command = local.gatewatch_healthcheck, interval = 10, timeout = 3, retries = 3, startPeriod = 15 }
      stopTimeout            = 30
      cpu                    = 256
      memoryReservation      = 256
      memory                 = 512
      logConfiguration       = { logDriver = "awslogs", options = merge(local.log_options, { "awslogs-stream-prefix" = "gatewatch" }) }
    },
    {
      name         = "litellm"
      image        = var.litellm_image
      essential    = true
      portMappings = [{ name = "litellm", containerPort = 4000, protocol = "tcp" }]
      entryPoint   = ["/bin/sh", "-c"]
      command      = ["set -e; mkfifo /tmp/litellm.pipe; python3 -c \"$LITELLM_LOGPIPE\" < /tmp/litellm.pipe & exec litellm --config /etc/litellm/config.yaml --port 4000 > /tmp/litellm.pipe 2>&1"]
      environment = [
        { name = "GENERIC_LOGGER_ENDPOINT", value = "http://127.0.0.1:9464/v1/litellm/events" },
        { name = "JSON_LOGS", value = "True" },
        { name = "LITELLM_LOG", value = "INFO" },
        { name = "LITELLM_LOG_FILE", value = "/var/log/litellm/proxy.log" },
        { name = "LITELLM_LOG_MAX_BYTES", value = "52428800" },
        { name = "LITELLM_LOGPIPE", value = "${local.logpipe}\n" },
      ]
      secrets = [
        { name = "GENERIC_LOGGER_HEADERS", valueFrom = "${var.secret_arn}:generic_logger_headers::" },
        { name = "LITELLM_MASTER_KEY", valueFrom = "${var.secret_arn}:master_key::" },
        { name = "WEBHOOK_URL", valueFrom = "${var.secret_arn}:webhook_url::" },
      ]
      mountPoints = [
        { sourceVolume = "litellm-config", containerPath = "/etc/litellm", readOnly = true },
        { sourceVolume = "litellm-logs", containerPath = "/var/log/litellm" },
      ]
      dependsOn = [
        { containerName = "litellm-config", condition = "SUCCESS" },
        { containerName = "gatewatch", condition = "HEALTHY" },
      ]
      healthCheck      = { command = local.litellm_healthcheck, interval = 15, timeout = 5, retries = 3, startPeriod = 60 }
      stopTimeout      = 60
      ulimits          = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
      logConfiguration = { logDriver = "awslogs", options = merge(local.log_options, { "awslogs-stream-prefix" = "litellm" }) }
    },
  ]
}

resource "aws_cloudwatch_log_group" "this" {
  name              = local.log_group
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_s3_object" "gatewatch_config" {
  bucket       = var.config_bucket
  key          = var.gatewatch_config_key
  content_type = "application/yaml"
  content = templatefile("${path.module}/templates/gatewatch.yaml.tftpl", {
    rules_url           = local.rules_url
    refresh_interval    = var.refresh_interval
    namespace           = var.cloudwatch_namespace
    monitoring_role_arn = var.monitoring_role_arn
    region              = local.region
    quotas_enabled      = var.quotas_enabled
    quota_role_arns     = var.quota_role_arns
  })
  tags = var.tags
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  task_role_arn            = aws_iam_role.task.arn
  execution_role_arn       = aws_iam_role.execution.arn
  container_definitions    = jsonencode(local.containers)

  runtime_platform {
    cpu_architecture        = var.cpu_architecture
    operating_system_family = "LINUX"
  }

  volume { name = "litellm-config" }
  volume { name = "litellm-logs" }
  volume { name = "gatewatch-state" }
  volume { name = "gatewatch-tmp" }

  tags = var.tags
}

# Example: LiteLLM + gatewatch on Fargate in a workload account, CloudWatch metrics sent to
# a central monitoring account. `terraform init && terraform apply` after filling in
# terraform.tfvars (see variables.tf). tests/test_deploy_ecs.py validates and plans this.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region
}

# The central monitoring account, where gatewatch's PutMetricData lands.
provider "aws" {
  alias  = "monitoring"
  region = var.region
  assume_role {
    role_arn = var.monitoring_admin_role_arn
  }
}

module "litellm" {
  source = "../modules/litellm-gatewatch"

  name                         = "litellm"
  config_bucket                = var.config_bucket
  secret_arn                   = var.secret_arn
  gatewatch_image              = var.gatewatch_image
  gatewatch_ecr_repository_arn = var.gatewatch_ecr_repository_arn
  monitoring_role_arn          = aws_iam_role.gatewatch_metrics.arn
  bedrock_model_arns           = var.bedrock_model_arns
  tags                         = { app = "litellm" }
}

# -- in the monitoring account ------------------------------------------------------------
resource "aws_iam_role" "gatewatch_metrics" {
  provider           = aws.monitoring
  name               = "gatewatch-put-metrics"
  assume_role_policy = module.litellm.monitoring_role_trust_policy
}

resource "aws_iam_role_policy" "gatewatch_metrics" {
  provider = aws.monitoring
  name     = "gatewatch-put-metrics"
  role     = aws_iam_role.gatewatch_metrics.id
  policy   = module.litellm.monitoring_role_policy
}

# -- the service ---------------------------------------------------------------------------
resource "aws_ecs_cluster" "this" {
  name = "litellm"
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_security_group" "litellm" {
  name        = "litellm"
  description = "LiteLLM proxy: 4000 from the load balancer / VPC; gatewatch 9464 for Prometheus scrapes"
  vpc_id      = var.vpc_id

  ingress {
    description = "LiteLLM API"
    from_port   = 4000
    to_port     = 4000
    protocol    = "tcp"
    cidr_blocks = var.client_cidrs
  }

  ingress {
    description = "gatewatch /metrics (Prometheus)"
    from_port   = 9464
    to_port     = 9464
    protocol    = "tcp"
    cidr_blocks = var.scraper_cidrs
  }

  egress {
    description = "LLM providers, S3, CloudWatch, STS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_ecs_service" "litellm" {
  name                   = "litellm"
  cluster                = aws_ecs_cluster.this.id
  task_definition        = module.litellm.task_definition_arn
  desired_count          = var.desired_count
  launch_type            = "FARGATE"
  platform_version       = "1.4.0"
  enable_execute_command = false

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.litellm.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
}

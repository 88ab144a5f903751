"""deploy/ecs: the task definition against ECS's RegisterTaskDefinition shape (botocore's
service model), the Terraform module planned offline with the real AWS provider, and the
glue between them and gatewatch's own config schema (ports, paths, env, secrets, IAM)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import hcl2
import pytest
import yaml

from agent.config import Config, parse_config
from agent.sources.callbacks import EVENTS_ROUTE
from tests import terraform_runner as tf
from tests.conftest import FIXTURES, ROOT, load_capture
from tests.ecs_shape import container_definition_shape, shape_errors, task_definition_errors

ECS = ROOT / "deploy" / "ecs"
MODULE = ECS / "terraform" / "modules" / "litellm-gatewatch"
EXAMPLE = ECS / "terraform" / "example"
TASK_DEF = json.loads((ECS / "task-definition.json").read_text())
BUCKET = "acme-litellm-config"
MONITORING_ROLE = "arn:aws:iam::444455556666:role/gatewatch-put-metrics"
QUOTA_ROLE = "arn:aws:iam::555555555555:role/gatewatch-quotas"


def container(td_containers: list[dict], name: str) -> dict[str, Any]:
    return next(c for c in td_containers if c["name"] == name)


def env_of(c: dict[str, Any]) -> dict[str, str]:
    """What the container sees: its environment plus its secrets (dummy values)."""
    env = {e["name"]: e["value"] for e in c.get("environment", [])}
    env.update({s["name"]: f"secret-{s['name'].lower()}" for s in c.get("secrets", [])})
    return env


def mounts_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["containerPath"]: m for m in c.get("mountPoints", [])}


def under(path: str, directory: str) -> bool:
    return Path(path).is_relative_to(directory)


def logpipe_code() -> str:
    script = (MODULE / "files" / "logpipe.py").read_text()
    return "\n".join(line for line in script.splitlines() if line and not line.startswith("#")) + "\n"


def gatewatch_config_for(containers: list[dict], text: str) -> Config:
    gw = container(containers, "gatewatch")
    return parse_config(yaml.safe_load(text), "gatewatch.yaml", env=env_of(gw))


def check_glue(containers: list[dict], cfg: Config) -> None:
    """The sidecar, the proxy and the init container agree with gatewatch's config."""
    gw, proxy, init = (container(containers, n) for n in ("gatewatch", "litellm", "litellm-config"))
    gw_mounts, proxy_mounts, init_mounts = mounts_of(gw), mounts_of(proxy), mounts_of(init)
    gw_env, proxy_env = env_of(gw), env_of(proxy)

    # ingest: the proxy posts to the sidecar's port and route, with the token it checks
    port = cfg.server.port
    assert [p["containerPort"] for p in gw["portMappings"]] == [port]
    endpoint = urlparse(proxy_env["GENERIC_LOGGER_ENDPOINT"])
    assert (endpoint.hostname, endpoint.port, endpoint.path) == ("127.0.0.1", port, EVENTS_ROUTE)
    assert cfg.server.auth_token == gw_env["GATEWATCH_TOKEN"]  # ${GATEWATCH_TOKEN} from the secret
    assert "GENERIC_LOGGER_HEADERS" in {s["name"] for s in proxy["secrets"]}  # "Authorization=Bearer <token>"
    assert f"127.0.0.1:{port}/healthz" in " ".join(gw["healthCheck"]["command"])

    # start order and stop budget
    assert {"containerName": "gatewatch", "condition": "HEALTHY"} in proxy["dependsOn"]
    assert {"containerName": "litellm-config", "condition": "SUCCESS"} in proxy["dependsOn"]
    assert {"containerName": "litellm-config", "condition": "SUCCESS"} in gw["dependsOn"]
    assert init["essential"] is False and gw["essential"] is True and proxy["essential"] is True
    assert cfg.server.shutdown_grace < gw["stopTimeout"]

    # read-only root: everything gatewatch writes is a volume
    assert gw["readonlyRootFilesystem"] is True
    assert cfg.state_dir in gw_mounts and not gw_mounts[cfg.state_dir].get("readOnly", False)
    assert "/tmp" in gw_mounts
    assert gw_env["GATEWATCH_STATE_DIR"] == cfg.state_dir

    # the LiteLLM config: fetched by the init container, read by the proxy and by gatewatch
    config_path = cfg.litellm.config
    assert config_path and config_path in init["command"][0] and f"--config {config_path}" in proxy["command"][0]
    config_dir = str(Path(config_path).parent)
    for mounts in (gw_mounts, proxy_mounts, init_mounts):
        assert mounts[config_dir]["sourceVolume"] == "litellm-config"
    assert gw_mounts[config_dir].get("readOnly") is True

    # the proxy's logs: written by its log pipe onto the shared volume gatewatch tails
    # the glob must take the live file and its rename-rotated predecessor (.1)
    assert len(cfg.litellm.logs) == 1
    assert fnmatch.fnmatch(proxy_env["LITELLM_LOG_FILE"], cfg.litellm.logs[0])
    assert fnmatch.fnmatch(proxy_env["LITELLM_LOG_FILE"] + ".1", cfg.litellm.logs[0])
    log_dir = str(Path(proxy_env["LITELLM_LOG_FILE"]).parent)
    assert proxy_mounts[log_dir]["sourceVolume"] == gw_mounts[log_dir]["sourceVolume"] == "litellm-logs"
    assert gw_mounts[log_dir].get("readOnly") is True and not proxy_mounts[log_dir].get("readOnly", False)
    assert f"chmod 1777 {log_dir}" in init["command"][0]  # any proxy uid may write it
    assert proxy_env["LITELLM_LOGPIPE"] == logpipe_code()
    assert proxy_env["JSON_LOGS"] == "True"

    # config and rules from S3, refreshed by ETag
    assert gw_env["GATEWATCH_CONFIG"].startswith("s3://")
    assert gw_env["GATEWATCH_RULES_URL"] in (cfg.rules or [])
    assert cfg.refresh.interval > 0

    # every container logs through awslogs into one group
    groups = {c["logConfiguration"]["options"]["awslogs-group"] for c in containers}
    assert len(groups) == 1 and all(c["logConfiguration"]["logDriver"] == "awslogs" for c in containers)


# -- the task definition JSON ------------------------------------------------------------
def test_task_definition_json_is_a_valid_register_task_definition_input():
    assert task_definition_errors(TASK_DEF) == []


def test_shape_validator_catches_what_ecs_would_refuse():
    broken = json.loads(json.dumps(TASK_DEF))
    gw = container(broken["containerDefinitions"], "gatewatch")
    gw["stopTimeout"] = "30"
    gw["healthcheck"] = gw.pop("healthCheck")
    container(broken["containerDefinitions"], "litellm")["dependsOn"][1]["condition"] = "READY"
    errors = "\n".join(task_definition_errors(broken))
    assert "stopTimeout" in errors and "healthcheck" in errors and "'READY' is not one of" in errors
    broken = json.loads(json.dumps(TASK_DEF))
    broken["memory"] = "3000"
    container(broken["containerDefinitions"], "litellm")["dependsOn"][1]["containerName"] = "sidecar"
    errors = "\n".join(task_definition_errors(broken))
    assert "Fargate task size" in errors and "unknown container sidecar" in errors


def test_task_definition_json_agrees_with_gatewatch_config():
    containers = TASK_DEF["containerDefinitions"]
    cfg = gatewatch_config_for(containers, (ECS / "gatewatch.yaml").read_text())
    check_glue(containers, cfg)
    assert container(containers, "gatewatch")["environment"][0]["value"] == f"s3://{BUCKET}/gatewatch/gatewatch.yaml"
    assert cfg.cloudwatch.enabled and cfg.cloudwatch.mode == "emf" and cfg.cloudwatch.emf_output == "stdout"


def test_gatewatch_image_paths_match_the_task_definition():
    dockerfile = (ROOT / "Dockerfile").read_text()
    gw = container(TASK_DEF["containerDefinitions"], "gatewatch")
    assert f"GATEWATCH_STATE_DIR={env_of(gw)['GATEWATCH_STATE_DIR']}" in dockerfile
    volume_line = next(line for line in dockerfile.splitlines() if line.startswith("VOLUME"))
    for path, mount in mounts_of(gw).items():
        if not mount.get("readOnly"):  # writable mounts get the image's owner and mode only if declared
            assert f'"{path}"' in volume_line


def test_litellm_config_snippet_points_generic_api_at_the_sidecar():
    snippet = yaml.safe_load((ECS / "litellm-config-snippet.yaml").read_text())
    assert "generic_api" in snippet["litellm_settings"]["callbacks"]
    assert snippet["litellm_settings"]["json_logs"] is True
    # the callback the fixtures' proxy (LiteLLM 1.108.7) really posted with
    fixture = yaml.safe_load((FIXTURES / "config.yaml").read_text())
    assert "generic_api" in fixture["litellm_settings"]["callbacks"]
    assert load_capture("generic_api_success.json")["path"] == "/generic_api"


def test_litellm_command_tees_logs_to_a_rotated_file_and_passes_sigterm(tmp_path):
    """Run the proxy container's real command with a stand-in `litellm` executable."""
    proxy = container(TASK_DEF["containerDefinitions"], "litellm")
    assert proxy["entryPoint"] == ["/bin/sh", "-c"]
    fifo = tmp_path / "litellm.pipe"
    command = proxy["command"][0].replace("/tmp/litellm.pipe", str(fifo))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "litellm"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, signal, sys, time\n"
        "def stop(*_):\n"
        "    print(json.dumps({'message': 'Shutting down', 'level': 'INFO'}), flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "for i in range(30):\n"
        "    print(json.dumps({'message': f'line {i:03d}', 'pad': 'x' * 60}), flush=True)\n"
        "print('ready', file=sys.stderr, flush=True)\n"
        "while True:\n"
        "    time.sleep(0.1)\n"
    )
    fake.chmod(0o755)
    log_file = tmp_path / "proxy.log"
    env = {**os.environ, **env_of(proxy), "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "LITELLM_LOG_FILE": str(log_file), "LITELLM_LOG_MAX_BYTES": "1500"}
    proc = subprocess.Popen([*proxy["entryPoint"], command], env=env, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while b"ready" not in (log_file.read_bytes() if log_file.exists() else b""):
        assert time.monotonic() < deadline and proc.poll() is None, "the proxy stand-in never got going"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # ECS signals PID 1 of the container: the exec'd proxy itself
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    lines = [line for line in out.decode().splitlines() if line]
    assert lines[-1] == json.dumps({"message": "Shutting down", "level": "INFO"})  # stdout -> awslogs
    on_disk = ((tmp_path / "proxy.log.1").read_text() + log_file.read_text()).splitlines()
    assert (tmp_path / "proxy.log.1").stat().st_size >= 1500  # rotated by rename
    assert on_disk == lines[len(lines) - len(on_disk):]  # the file holds the same lines, in order
    assert on_disk[-1] == lines[-1] and any("line 029" in line for line in on_disk)


# -- Terraform -------------------------------------------------------------------------------
def hcl_files() -> list[Path]:
    return sorted((ECS / "terraform").rglob("*.tf"))


def test_terraform_parses_and_references_only_declared_variables():
    """Always runs (python-hcl2); the plan below is the stronger check where Terraform exists."""
    for directory in (MODULE, EXAMPLE):
        declared: set[str] = set()
        text = ""
        for path in sorted(directory.glob("*.tf")):
            parsed = hcl2.loads(path.read_text())
            for block in parsed.get("variable", []):
                declared.update(name.strip('"') for name in block)
            text += path.read_text()
        used = set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", text))
        assert used <= declared, f"{directory}: undeclared {sorted(used - declared)}"
    assert hcl_files()


@pytest.fixture(scope="module")
def module_plan(tmp_path_factory) -> dict[str, Any]:
    reason = tf.available()
    if reason:
        pytest.skip(reason)
    scratch = tmp_path_factory.mktemp("tf")
    root = scratch / "root"
    root.mkdir()
    secret = container(TASK_DEF["containerDefinitions"], "gatewatch")["secrets"][0]["valueFrom"].rsplit(":", 3)[0]
    common = f'''
  config_bucket                = "{BUCKET}"
  secret_arn                   = "{secret}"
  gatewatch_image              = "{container(TASK_DEF["containerDefinitions"], "gatewatch")["image"]}"
  gatewatch_ecr_repository_arn = "arn:aws:ecr:eu-west-1:111122223333:repository/gatewatch"
  bedrock_model_arns           = ["arn:aws:bedrock:eu-west-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"]
  litellm_assume_role_arns     = ["arn:aws:iam::555555555555:role/litellm-bedrock-invoke"]
'''
    (root / "main.tf").write_text(
        tf.offline_provider_override()
        + f'module "emf" {{\n  source = "{MODULE}"\n{common}}}\n'
        + f'module "api" {{\n  source = "{MODULE}"\n  name = "litellm-api"\n'
        + f'  monitoring_role_arn = "{MONITORING_ROLE}"\n'
        + f'  quotas_enabled = true\n  quota_role_arns = {{ "555555555555" = "{QUOTA_ROLE}" }}\n'
        + f'{common}}}\n'
        + 'output "monitoring_policy" {\n  value = module.api.monitoring_role_policy\n}\n'
    )
    return tf.Terraform(root, scratch).plan_json()


def planned_task_definition(plan: dict[str, Any], module: str) -> dict[str, Any]:
    after = tf.resource_after(plan, f"module.{module}.aws_ecs_task_definition.this")
    return {
        "family": after["family"],
        "taskRoleArn": "arn:aws:iam::111122223333:role/litellm-task",  # known after apply
        "executionRoleArn": "arn:aws:iam::111122223333:role/litellm-execution",
        "networkMode": after["network_mode"],
        "requiresCompatibilities": after["requires_compatibilities"],
        "cpu": after["cpu"],
        "memory": after["memory"],
        "runtimePlatform": {"cpuArchitecture": after["runtime_platform"][0]["cpu_architecture"],
                            "operatingSystemFamily": after["runtime_platform"][0]["operating_system_family"]},
        "volumes": [{"name": v["name"]} for v in after["volume"]],
        "containerDefinitions": json.loads(after["container_definitions"]),
    }


def normalized(containers: list[dict]) -> list[dict]:
    """Order-insensitive where the provider is: containers, environment and secrets by name."""
    out = sorted(json.loads(json.dumps(containers, sort_keys=True)), key=lambda c: c["name"])
    for c in out:
        for key in ("environment", "secrets"):
            if key in c:
                c[key] = sorted(c[key], key=lambda item: item["name"])
    return out


@pytest.mark.slow
def test_terraform_task_definition_is_valid_and_equals_the_json(module_plan):
    planned = planned_task_definition(module_plan, "emf")
    assert task_definition_errors(planned) == []
    for c in planned["containerDefinitions"]:
        assert shape_errors(c, container_definition_shape(), c["name"]) == []
    expected = {k: v for k, v in TASK_DEF.items() if k != "tags"}
    for td in (planned, expected):  # the provider keeps volumes as a set
        td["volumes"] = sorted(td["volumes"], key=lambda v: v["name"])
    assert {k: v for k, v in planned.items() if k != "containerDefinitions"} == \
        {k: v for k, v in expected.items() if k != "containerDefinitions"}
    assert normalized(planned["containerDefinitions"]) == normalized(TASK_DEF["containerDefinitions"])


@pytest.mark.slow
def test_terraform_writes_a_gatewatch_config_that_loads(module_plan):
    containers = planned_task_definition(module_plan, "emf")["containerDefinitions"]
    emf = gatewatch_config_for(containers, tf.resource_after(module_plan, "module.emf.aws_s3_object.gatewatch_config")
                               ["content"])
    check_glue(containers, emf)
    assert emf.cloudwatch.mode == "emf" and emf.cloudwatch.role_arn is None
    api = gatewatch_config_for(containers, tf.resource_after(module_plan, "module.api.aws_s3_object.gatewatch_config")
                               ["content"])
    assert api.cloudwatch.mode == "api" and api.cloudwatch.region == "eu-west-1"
    assert api.cloudwatch.role_arn == MONITORING_ROLE
    assert not emf.quotas.enabled
    assert api.quotas.enabled and api.quotas.roles == {"555555555555": QUOTA_ROLE}
    assert tf.resource_after(module_plan, "module.emf.aws_s3_object.gatewatch_config")["key"] == \
        urlparse(env_of(container(containers, "gatewatch"))["GATEWATCH_CONFIG"]).path.lstrip("/")


def statements(policy_json: str) -> list[dict[str, Any]]:
    out = []
    for st in json.loads(policy_json)["Statement"]:
        st = dict(st)
        for key in ("Action", "Resource"):
            if isinstance(st.get(key), str):
                st[key] = [st[key]]
        out.append(st)
    return out


@pytest.mark.slow
def test_iam_is_least_privilege(module_plan):
    emf = statements(tf.resource_after(module_plan, "module.emf.aws_iam_role_policy.task")["policy"])
    api = statements(tf.resource_after(module_plan, "module.api.aws_iam_role_policy.task")["policy"])
    for st in emf + api:
        assert st["Effect"] == "Allow"
        assert all("*" not in action for action in st["Action"]), st
        assert "*" not in st["Resource"], st
    by_sid = {st["Sid"]: st for st in api}
    gets = sorted(r for st in api if "s3:GetObject" in st["Action"] for r in st["Resource"])
    assert gets == sorted(f"arn:aws:s3:::{BUCKET}/{key}"
                          for key in ("litellm/config.yaml", "gatewatch/gatewatch.yaml", "gatewatch/rules/*"))
    assert by_sid["GatewatchListsRuleFiles"]["Condition"] == {"StringLike": {"s3:prefix": "gatewatch/rules/*"}}
    assert by_sid["GatewatchAssumesMonitoringRole"]["Resource"] == [MONITORING_ROLE]
    assert "GatewatchAssumesMonitoringRole" not in {st["Sid"] for st in emf}  # EMF needs no AWS call at all
    assert not any(a.startswith("cloudwatch:") for st in emf + api for a in st["Action"])
    # Bedrock quota headroom: only where quotas_enabled, reads only, roles listed one by one
    quota = statements(tf.resource_after(module_plan, "module.api.aws_iam_role_policy.quota_reader[0]")["policy"])
    assert sorted(a for st in quota for a in st["Action"]) == [
        "cloudwatch:GetMetricData", "servicequotas:GetServiceQuota", "servicequotas:ListServiceQuotas"]
    assume = statements(tf.resource_after(module_plan, "module.api.aws_iam_role_policy.quota_roles[0]")["policy"])
    assert assume == [{"Sid": "GatewatchAssumesQuotaRoles", "Effect": "Allow", "Action": ["sts:AssumeRole"],
                       "Resource": [QUOTA_ROLE]}]
    emf_module = [m for m in module_plan["planned_values"]["root_module"]["child_modules"]
                  if m["address"] == "module.emf"]
    assert emf_module and not [r for r in emf_module[0].get("resources", []) if "quota" in r["name"]]
    monitoring = statements(module_plan["planned_values"]["outputs"]["monitoring_policy"]["value"])
    assert [st["Action"] for st in monitoring] == [["cloudwatch:PutMetricData"]]
    assert monitoring[0]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "LiteLLM"}}
    # every policy document of the module (the execution role's is only known after apply):
    # a "*" resource only for the actions that take no resource
    wildcard = {tuple(st["actions"]): st.get("condition") for st in hcl_statements(MODULE / "iam.tf")
                if st["resources"] == ["*"]}
    assert set(wildcard) == {("ecr:GetAuthorizationToken",), ("cloudwatch:PutMetricData",),
                             ("servicequotas:ListServiceQuotas",), ("cloudwatch:GetMetricData",)}  # no resource types
    assert wildcard[("cloudwatch:PutMetricData",)] is not None  # scoped by namespace


def hcl_statements(path: Path) -> list[dict[str, Any]]:
    """Every `statement` of every aws_iam_policy_document, static or dynamic, unquoted."""
    found: list[dict[str, Any]] = []

    def unquote(value: Any) -> Any:
        if isinstance(value, str):
            return value.strip('"')
        if isinstance(value, list):
            return [unquote(v) for v in value]
        if isinstance(value, dict):
            return {k.strip('"'): unquote(v) for k, v in value.items() if not k.startswith("__")}
        return value

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "actions" in node and "resources" in node:
                found.append(unquote(node))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(hcl2.loads(path.read_text()))
    assert found
    return found


@pytest.mark.slow
def test_terraform_example_plans(tmp_path):
    reason = tf.available()
    if reason:
        pytest.skip(reason)
    shutil.copytree(ECS / "terraform", tmp_path / "terraform")
    work = tmp_path / "terraform" / "example"
    shutil.copy(work / "terraform.tfvars.example", work / "terraform.tfvars")
    (work / "offline_override.tf").write_text(
        tf.offline_provider_override() + tf.offline_provider_override("monitoring", assume_role_placeholder=True))
    runner = tf.Terraform(work, tmp_path)
    runner.run("fmt", "-check", "-recursive", str(ECS / "terraform"))
    plan = runner.plan_json()
    addresses = {c["address"] for c in plan["resource_changes"]}
    assert {"module.litellm.aws_ecs_task_definition.this", "aws_ecs_service.litellm",
            "aws_iam_role.gatewatch_metrics", "module.litellm.aws_s3_object.gatewatch_config"} <= addresses

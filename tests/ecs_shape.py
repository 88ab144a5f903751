"""Validate an ECS task definition the way RegisterTaskDefinition would, offline.

Types, required members, unknown keys and minimum lengths come from botocore's own
parameter validator over the ECS service model; botocore does not check enums, so a walk
of the same shape does. On top, the rules ECS documents but the model cannot express
(Fargate sizes, stopTimeout and health-check ranges, references between containers and
volumes), because a definition that passes the shape can still be refused at deploy time.
"""

from __future__ import annotations

from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, Shape, StructureShape
from botocore.validate import ParamValidator

# Fargate task sizes: cpu units -> allowed memory (MiB)
FARGATE_MEMORY = {
    256: [512, 1024, 2048],
    512: list(range(1024, 4097, 1024)),
    1024: list(range(2048, 8193, 1024)),
    2048: list(range(4096, 16385, 1024)),
    4096: list(range(8192, 30721, 1024)),
    8192: list(range(16384, 61441, 4096)),
    16384: list(range(32768, 122881, 8192)),
}


def register_task_definition_shape() -> StructureShape:
    model = botocore.session.get_session().get_service_model("ecs")
    return model.operation_model("RegisterTaskDefinition").input_shape


def container_definition_shape() -> StructureShape:
    return register_task_definition_shape().members["containerDefinitions"].member


def _enum_errors(shape: Shape, value: Any, path: str) -> list[str]:
    errors: list[str] = []
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                errors += _enum_errors(shape.members[key], item, f"{path}.{key}")
    elif isinstance(shape, ListShape) and isinstance(value, list):
        for i, item in enumerate(value):
            errors += _enum_errors(shape.member, item, f"{path}[{i}]")
    elif isinstance(shape, MapShape) and isinstance(value, dict):
        for key, item in value.items():
            errors += _enum_errors(shape.value, item, f"{path}.{key}")
    else:
        allowed = getattr(shape, "enum", None)  # only string shapes carry one
        if allowed and value not in allowed:
            errors.append(f"{path}: {value!r} is not one of {allowed}")
    return errors


def shape_errors(params: dict[str, Any], shape: Shape, name: str = "input") -> list[str]:
    report = ParamValidator().validate(params, shape)
    errors = [line for line in report.generate_report().splitlines() if line.strip()] if report.has_errors() else []
    return errors + _enum_errors(shape, params, name)


def ecs_rule_errors(td: dict[str, Any]) -> list[str]:
    """What ECS refuses at registration or start although the shape allows it."""
    errors: list[str] = []
    containers = td.get("containerDefinitions", [])
    names = [c.get("name") for c in containers]
    if len(set(names)) != len(names):
        errors.append(f"container names are not unique: {names}")
    volumes = {v.get("name") for v in td.get("volumes", [])}
    fargate = "FARGATE" in td.get("requiresCompatibilities", [])
    if fargate:
        if td.get("networkMode") != "awsvpc":
            errors.append("Fargate needs networkMode awsvpc")
        cpu, memory = int(td.get("cpu", 0)), int(td.get("memory", 0))
        if memory not in FARGATE_MEMORY.get(cpu, []):
            errors.append(f"cpu {cpu} / memory {memory} is not a Fargate task size")
    for c in containers:
        where = f"container {c.get('name')}"
        for dep in c.get("dependsOn", []):
            if dep.get("containerName") not in names:
                errors.append(f"{where}: dependsOn unknown container {dep.get('containerName')}")
            target = next((t for t in containers if t.get("name") == dep.get("containerName")), {})
            if dep.get("condition") == "HEALTHY" and "healthCheck" not in target:
                errors.append(f"{where}: HEALTHY dependency on {dep.get('containerName')}, which has no healthCheck")
            if dep.get("condition") in ("SUCCESS", "COMPLETE") and target.get("essential", True):
                errors.append(f"{where}: {dep.get('condition')} dependency on an essential container")
        for mount in c.get("mountPoints", []):
            if mount.get("sourceVolume") not in volumes:
                errors.append(f"{where}: mountPoint of unknown volume {mount.get('sourceVolume')}")
        stop = c.get("stopTimeout")
        if stop is not None and fargate and not 2 <= stop <= 120:
            errors.append(f"{where}: stopTimeout {stop} outside Fargate's 2-120 s")
        hc = c.get("healthCheck")
        if hc:
            limits = (("interval", 5, 300), ("timeout", 2, 60), ("retries", 1, 10), ("startPeriod", 0, 300))
            for key, low, high in limits:
                if key in hc and not low <= hc[key] <= high:
                    errors.append(f"{where}: healthCheck.{key} {hc[key]} outside {low}-{high}")
            if hc["command"][0] not in ("CMD", "CMD-SHELL"):
                errors.append(f"{where}: healthCheck.command must start with CMD or CMD-SHELL")
            if hc.get("timeout", 5) >= hc.get("interval", 30):
                errors.append(f"{where}: healthCheck.timeout must be shorter than its interval")
        reservation, hard = c.get("memoryReservation"), c.get("memory")
        if reservation is not None and hard is not None and reservation > hard:
            errors.append(f"{where}: memoryReservation above memory")
        if fargate and c.get("logConfiguration", {}).get("logDriver") not in (None, "awslogs", "splunk", "awsfirelens"):
            errors.append(f"{where}: log driver not supported on Fargate")
    if not any(c.get("essential", True) for c in containers):
        errors.append("at least one container must be essential")
    return errors


def task_definition_errors(td: dict[str, Any]) -> list[str]:
    """Shape errors first; the ECS rules assume a well-typed definition, so they run after."""
    return shape_errors(td, register_task_definition_shape()) or ecs_rule_errors(td)

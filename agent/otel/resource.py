"""The OTel resource: which service and which ECS task the spans come from.

`service.name` defaults to `litellm-proxy` (the spans describe the proxy's calls, and
backends group by it); ECS task ARN, cluster, family, launch type, availability zone and
the proxy's container come from the task metadata endpoint (v4) when it answers. The
metadata describes the whole task, so the container is the proxy's (by name), not the
sidecar's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from agent import __version__
from agent.enrich import ecs_task_metadata, parse_task_arn

SCOPE_NAME = "gatewatch"
SCOPE_VERSION = __version__


def _proxy_container(task: Mapping[str, Any], name: str | None) -> Mapping[str, Any] | None:
    containers = [c for c in task.get("Containers") or () if isinstance(c, Mapping)]
    if name:
        return next((c for c in containers if c.get("Name") == name), None)
    for container in containers:
        if "litellm" in str(container.get("Name", "")).lower() or "litellm" in str(container.get("Image", "")).lower():
            return container
    return None


def ecs_attributes(task: Mapping[str, Any] | None, proxy_container: str | None = None) -> dict[str, str]:
    """Resource attributes (cloud.*, aws.ecs.*, container.*) from ECS task metadata v4."""
    if not task:
        return {}
    attrs: dict[str, str] = {"cloud.provider": "aws", "cloud.platform": "aws_ecs"}
    task_arn = task.get("TaskARN")
    if isinstance(task_arn, str) and task_arn:
        attrs["aws.ecs.task.arn"] = task_arn
        attrs["aws.ecs.task.id"] = task_arn.rsplit("/", 1)[-1]
        where = parse_task_arn(task_arn)
        if where.aws_account:
            attrs["cloud.account.id"] = where.aws_account
        if where.aws_region:
            attrs["cloud.region"] = where.aws_region
        cluster = task.get("Cluster")
        if isinstance(cluster, str) and cluster:
            if not cluster.startswith("arn:") and where.aws_account and where.aws_region:
                partition = task_arn.split(":")[1]
                cluster = f"arn:{partition}:ecs:{where.aws_region}:{where.aws_account}:cluster/{cluster}"
            attrs["aws.ecs.cluster.arn"] = cluster
    for key, attr in (("Family", "aws.ecs.task.family"), ("Revision", "aws.ecs.task.revision"),
                      ("AvailabilityZone", "cloud.availability_zone")):
        value = task.get(key)
        if value not in (None, ""):
            attrs[attr] = str(value)
    launch = task.get("LaunchType")
    if isinstance(launch, str) and launch:
        attrs["aws.ecs.launchtype"] = launch.lower()
    container = _proxy_container(task, proxy_container)
    if container is not None:
        for key, attr in (("Name", "container.name"), ("DockerId", "container.id"),
                          ("ContainerARN", "aws.ecs.container.arn"), ("Image", "container.image.name")):
            value = container.get(key)
            if isinstance(value, str) and value:
                attrs[attr] = value
    return attrs


def build_attributes(service_name: str, configured: Mapping[str, str], task: Mapping[str, Any] | None,
                     proxy_container: str | None = None) -> dict[str, str]:
    """service.* + ECS, then OTEL_RESOURCE_ATTRIBUTES / `otel.resource_attributes` on top."""
    attrs: dict[str, str] = {
        "service.name": service_name,
        "telemetry.sdk.name": "gatewatch",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": __version__,
    }
    ecs = ecs_attributes(task, proxy_container)
    attrs.update(ecs)
    # one instance per task (the proxy's); outside ECS a random id per process, as the conventions advise
    attrs["service.instance.id"] = ecs.get("aws.ecs.task.arn") or str(uuid.uuid4())
    attrs.update(configured)
    attrs["service.name"] = service_name
    return attrs


async def detect(service_name: str, configured: Mapping[str, str], proxy_container: str | None = None,
                 wait: float = 2.0) -> dict[str, str]:
    """Resource attributes, asking the ECS metadata endpoint when $ECS_CONTAINER_METADATA_URI_V4 is set."""
    task = await ecs_task_metadata(wait)
    return build_attributes(service_name, configured, task, proxy_container)

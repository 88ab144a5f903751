"""Which task this sidecar runs in, for pages about this task's own proxy.

On ECS the task ARN (from the task metadata endpoint, `$ECS_CONTAINER_METADATA_URI_V4`)
says which of the service's tasks it is; elsewhere the host name is the best handle a
person has (a container's host name is its id).
"""

from __future__ import annotations

import socket

from agent.enrich import ecs_task_metadata


async def task_identity() -> str:
    task = await ecs_task_metadata()
    if task and isinstance(task.get("TaskARN"), str) and task["TaskARN"]:
        return str(task["TaskARN"])
    return socket.gethostname() or "unknown"

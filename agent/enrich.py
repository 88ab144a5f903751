"""Deployment catalog: which AWS account and region each LiteLLM deployment lives in.

LiteLLM's callback payload names the deployment (`model_id`) and its `api_base`, never
the account or region. Those come from the proxy's own config.yaml (the same file its
init container fetches, local or s3://) or from `GET /model/info`, joined on `model_id`
first, then on `api_base`. A deployment that cannot be attributed is never guessed
silently: it gets the configured/ECS fallback or `unknown`, and is counted.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlparse

from agent.events import UNKNOWN, Event, Kind

log = logging.getLogger(__name__)

_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:(?:iam|sts)::(\d{12}):")
_BEDROCK_HOST_RE = re.compile(
    r"bedrock(?:-runtime|-agent-runtime)?(?:-fips)?\.([a-z]{2}(?:-gov)?-[a-z]+-\d)\.amazonaws\.com"
)
_REGION_RE = re.compile(r"^[a-z]{2}(?:-gov)?-[a-z]+-\d$")
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_ENV_PREFIX = "os.environ/"
UNRECOGNIZED_MODEL = "other"  # LiteLLM's UNRECOGNIZED_REQUESTED_MODEL_LABEL
NONE = "None"  # LiteLLM's spelling of a missing label value


@dataclass(frozen=True, slots=True)
class Deployment:
    id: str
    model_group: str
    model: str = ""  # litellm_params.model without the provider prefix
    provider: str = ""
    api_base: str = ""
    aws_account: str = ""
    aws_region: str = ""
    rpm: float | None = None
    tpm: float | None = None
    attribution: str = ""  # where account/region came from, for `gatewatch check-config`


@dataclass(frozen=True, slots=True)
class Fallback:
    aws_account: str = ""
    aws_region: str = ""


def resolve_env(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """LiteLLM's `os.environ/NAME` indirection."""
    if isinstance(value, str) and value.startswith(_ENV_PREFIX):
        env = os.environ if env is None else env
        return env.get(value[len(_ENV_PREFIX) :], "")
    return value


def region_from_api_base(api_base: str) -> str:
    match = _BEDROCK_HOST_RE.search(api_base or "")
    return match.group(1) if match else ""


def _tag_value(tags: Iterable[str], name: str) -> str:
    """The *last* `name:value` tag: on a retry LiteLLM appends the new deployment's tags
    to request_tags without removing the failed one's, so the last pair is the one that
    served the call (seen on 1.108.7)."""
    prefix = name + ":"
    found = ""
    for tag in tags or ():
        if isinstance(tag, str) and tag.startswith(prefix):
            found = tag[len(prefix) :].strip()
    return found


def _normalize_base(api_base: str) -> str:
    return api_base.rstrip("/") if api_base else ""


def deployment_from_entry(entry: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Deployment | None:
    """One item of `model_list` (config.yaml) or of `/model/info`'s `data`."""
    if not isinstance(entry, Mapping):
        return None
    params = entry.get("litellm_params") or {}
    info = entry.get("model_info") or {}
    if not isinstance(params, Mapping) or not isinstance(info, Mapping):
        return None
    dep_id = str(info.get("id") or "")
    if not dep_id:
        return None
    full_model = str(resolve_env(params.get("model"), env) or "")
    provider = str(info.get("litellm_provider") or (full_model.split("/", 1)[0] if "/" in full_model else ""))
    model = full_model.split("/", 1)[1] if "/" in full_model else full_model
    if provider == "bedrock":
        for route in ("converse/", "invoke/"):
            if model.startswith(route):
                model = model[len(route) :]
    api_base = str(resolve_env(params.get("api_base"), env) or "")
    tags = params.get("tags") or []
    metadata = params.get("metadata") or {}
    sources: list[str] = []

    account = ""
    role = str(resolve_env(params.get("aws_role_name"), env) or "")
    match = _ROLE_ARN_RE.match(role)
    if match:
        account = match.group(1)
        sources.append("aws_role_name")
    for name, candidate in (
        ("tag aws_account", _tag_value(tags, "aws_account")),
        ("model_info.aws_account", info.get("aws_account")),
        ("model_info.account_id", info.get("account_id")),
        ("metadata.account_id", metadata.get("account_id") if isinstance(metadata, Mapping) else None),
    ):
        if not account and candidate and _ACCOUNT_RE.match(str(candidate)):
            account = str(candidate)
            sources.append(name)

    region = ""
    for name, candidate in (
        ("aws_region_name", resolve_env(params.get("aws_region_name"), env)),
        ("tag aws_region", _tag_value(tags, "aws_region")),
        ("bedrock host", region_from_api_base(api_base)),
        ("model_info.aws_region", info.get("aws_region")),
        ("model_info.region", info.get("region")),
    ):
        if not region and candidate and _REGION_RE.match(str(candidate)):
            region = str(candidate)
            sources.append(name)

    def _limit(key: str) -> float | None:
        value = resolve_env(params.get(key), env)
        try:
            return float(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    return Deployment(
        id=dep_id,
        model_group=str(entry.get("model_name") or ""),
        model=model,
        provider=provider,
        api_base=api_base,
        aws_account=account,
        aws_region=region,
        rpm=_limit("rpm"),
        tpm=_limit("tpm"),
        attribution=", ".join(sources),
    )


class Catalog:
    """Deployment lookup by id and by api_base, replaced atomically on refresh."""

    def __init__(self, deployments: Iterable[Deployment] = (), fallback: Fallback | None = None) -> None:
        self.fallback = fallback or Fallback()
        self._by_id: dict[str, Deployment] = {}
        self._by_base: dict[str, list[Deployment]] = {}
        self._groups: frozenset[str] = frozenset()
        self.replace(deployments)

    def replace(self, deployments: Iterable[Deployment]) -> None:
        by_id: dict[str, Deployment] = {}
        by_base: dict[str, list[Deployment]] = {}
        for dep in deployments:
            by_id[dep.id] = dep
            if dep.api_base:
                by_base.setdefault(_normalize_base(dep.api_base), []).append(dep)
        self._by_id, self._by_base = by_id, by_base
        self._groups = frozenset(d.model_group for d in by_id.values() if d.model_group)

    def knows_model(self, name: str) -> bool:
        """True when `name` is a model group or a deployment id of the proxy (what LiteLLM's
        router recognizes), or when there is no catalog to tell (nothing loaded yet)."""
        return not self._by_id or name in self._groups or name in self._by_id

    def merge(self, deployments: Iterable[Deployment]) -> None:
        """Add or update deployments (e.g. from /model/info) keeping what they do not say."""
        current = dict(self._by_id)
        for dep in deployments:
            old = current.get(dep.id)
            if old is not None:
                dep = replace(
                    dep,
                    aws_account=dep.aws_account or old.aws_account,
                    aws_region=dep.aws_region or old.aws_region,
                    rpm=dep.rpm if dep.rpm is not None else old.rpm,
                    tpm=dep.tpm if dep.tpm is not None else old.tpm,
                )
            current[dep.id] = dep
        self.replace(current.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):
        return iter(self._by_id.values())

    def get(self, deployment_id: str) -> Deployment | None:
        return self._by_id.get(deployment_id)

    def lookup(self, deployment_id: str, api_base: str, model: str = "") -> Deployment | None:
        dep = self._by_id.get(deployment_id) if deployment_id else None
        if dep is not None:
            return dep
        if not api_base:
            return None
        candidates = self._by_base.get(_normalize_base(api_base))
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        if model:
            matching = [d for d in candidates if d.model == model]
            if len(matching) == 1:
                return matching[0]
        return None  # ambiguous: several deployments share this api_base


class Enricher:
    """Fills account/region (and provider) on events; counts what it could not attribute."""

    def __init__(self, catalog: Catalog, on_unattributed: Any = None) -> None:
        self.catalog = catalog
        self._on_unattributed = on_unattributed  # callable(deployment_id, model_group)
        self._cache: dict[tuple[str, str, str], tuple[str, str, str]] = {}

    def invalidate(self) -> None:
        self._cache.clear()

    def enrich(self, event: Event) -> None:
        if not event.deployment and not event.api_base:
            # router-level or proxy-level failure: no deployment to attribute
            if event.kind == Kind.REQUEST and not event.health_check:
                self._refused(event)
            return
        key = (event.deployment, event.api_base, event.model)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._resolve(event)
            if len(self._cache) < 50000:
                self._cache[key] = cached
        account, region, provider = cached
        # Order: the catalog, then the deployment tags LiteLLM copies into request_tags,
        # then the configured / ECS fallback, else `unknown` (and counted).
        if not account or not region:
            if event.tags:
                account = account or _tag_value(event.tags, "aws_account")
                region = region or _tag_value(event.tags, "aws_region")
            fallback = self.catalog.fallback
            account = account or fallback.aws_account
            region = region or fallback.aws_region
        event.aws_account = account or UNKNOWN
        event.aws_region = region or UNKNOWN
        if not event.api_provider and provider:
            event.api_provider = provider
        if (not account or not region) and self._on_unattributed is not None and not event.health_check:
            self._on_unattributed(event.deployment or event.api_base, event.model_group)

    def _refused(self, event: Event) -> None:
        """A request refused before routing (bad key, unknown model, budget, no deployment
        available). Like LiteLLM's `_bounded_requested_model_label`, a requested model the
        proxy does not know becomes `other`, so clients cannot mint label values. It stays
        `unknown` in account and region, and is counted as unattributed like any other."""
        requested = event.requested_model
        if requested and not self.catalog.knows_model(requested):
            event.requested_model = UNRECOGNIZED_MODEL
        if self._on_unattributed is not None:
            self._on_unattributed(NONE, event.model_group or event.requested_model or NONE)

    def _resolve(self, event: Event) -> tuple[str, str, str]:
        dep = self.catalog.lookup(event.deployment, event.api_base, event.model)
        account = dep.aws_account if dep else ""
        region = (dep.aws_region if dep else "") or region_from_api_base(event.api_base)
        return account, region, (dep.provider if dep else "")


def catalog_from_config_text(text: str, fallback: Fallback | None = None, source: str = "") -> Catalog:
    import yaml

    from agent.configtypes import ConfigError

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML in LiteLLM config: {exc}", source) from None
    if not isinstance(data, Mapping):
        raise ConfigError("", "LiteLLM config must be a mapping with model_list", source)
    model_list = data.get("model_list") or []
    if not isinstance(model_list, list):
        raise ConfigError("model_list", "expected a list", source)
    deployments = [d for d in (deployment_from_entry(e) for e in model_list) if d is not None]
    return Catalog(deployments, fallback)


def catalog_from_model_info(body: Any) -> list[Deployment]:
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list):
        return []
    return [d for d in (deployment_from_entry(e) for e in data) if d is not None]


def parse_task_arn(task_arn: str) -> Fallback:
    """arn:aws:ecs:REGION:ACCOUNT:task/... -> the task's own account and region."""
    parts = task_arn.split(":")
    if len(parts) >= 6 and parts[2] == "ecs":
        return Fallback(aws_account=parts[4], aws_region=parts[3])
    return Fallback()


async def ecs_task_metadata(wait: float = 2.0) -> dict[str, Any] | None:
    """The ECS task metadata (v4), or None outside ECS or when it does not answer."""
    base = os.environ.get("ECS_CONTAINER_METADATA_URI_V4")
    if not base:
        return None
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait)) as session:
            async with session.get(base.rstrip("/") + "/task") as response:
                if response.status != 200:
                    return None
                body = await response.json(content_type=None)
                return body if isinstance(body, dict) else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.warning("ECS task metadata not available: %s", type(exc).__name__)
        return None


def host_port(api_base: str) -> tuple[str, int | None]:
    parsed = urlparse(api_base or "")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if port is None and parsed.scheme in ("http", "https"):
        port = 443 if parsed.scheme == "https" else 80
    return parsed.hostname or "", port


async def task_identity() -> str:
    """Which task this sidecar runs in, for pages about this task's own proxy: on ECS the
    task ARN (from `$ECS_CONTAINER_METADATA_URI_V4`), elsewhere the host name (a container's
    host name is its id)."""
    task = await ecs_task_metadata()
    if task and isinstance(task.get("TaskARN"), str) and task["TaskARN"]:
        return str(task["TaskARN"])
    return socket.gethostname() or "unknown"

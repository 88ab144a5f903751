"""Which quotas each Bedrock deployment of the LiteLLM config draws on, and with which credentials.

Built from the deployment catalog (account and region, as every other series is
attributed) and the raw `litellm_params` of the same config (credentials, which the
catalog does not keep). Pure: no AWS call here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from agent.enrich import Deployment
from agent.quotas.credentials import CredentialSource, credential_source
from agent.quotas.mapping import ModelInfo, ModelRef, ModelTable, model_ref


@dataclass
class PlannedDeployment:
    """One Bedrock deployment and what its quota reads need."""

    deployment: str
    model_group: str
    model: str  # as configured (without bedrock/ and converse/)
    aws_account: str
    aws_region: str
    ref: ModelRef | None
    info: ModelInfo | None
    credentials: CredentialSource
    problem: str = ""  # why no quota can be matched before even asking AWS

    @property
    def target_key(self) -> str:
        ref = self.ref
        return f"{self.aws_account}|{self.aws_region}|{ref.invoked if ref else self.model}|" \
               f"{ref.inference if ref else ''}"


@dataclass
class Plan:
    deployments: list[PlannedDeployment] = field(default_factory=list)

    def accounts(self) -> dict[tuple[str, str], CredentialSource]:
        """(account, region) -> the credentials to read its quotas with (the first deployment's)."""
        out: dict[tuple[str, str], CredentialSource] = {}
        for d in self.deployments:
            if not d.problem:
                out.setdefault((d.aws_account, d.aws_region), d.credentials)
        return out


def litellm_params_by_id(config_text: str | None) -> dict[str, Mapping[str, Any]]:
    """model_info.id -> litellm_params of the proxy's config.yaml."""
    if not config_text:
        return {}
    try:
        data = yaml.safe_load(config_text) or {}
    except yaml.YAMLError:
        return {}
    out: dict[str, Mapping[str, Any]] = {}
    for entry in (data.get("model_list") or []) if isinstance(data, Mapping) else []:
        if not isinstance(entry, Mapping):
            continue
        info, params = entry.get("model_info") or {}, entry.get("litellm_params") or {}
        if isinstance(info, Mapping) and isinstance(params, Mapping) and info.get("id"):
            out[str(info["id"])] = params
    return out


def build_plan(deployments: Iterable[Deployment], params: Mapping[str, Mapping[str, Any]], table: ModelTable,
               roles: Mapping[str, str], fallback_account: str = "", fallback_region: str = "",
               env: Mapping[str, str] | None = None) -> Plan:
    plan = Plan()
    for dep in deployments:
        if dep.provider != "bedrock":
            continue
        account = dep.aws_account or fallback_account
        region = dep.aws_region or fallback_region
        ref = model_ref(dep.model)
        info = table.lookup(ref.base) if ref else None
        problem = ""
        if not account or not region:
            problem = ("no AWS account/region attributed (set aws_role_name, aws_region_name or "
                       "aws_account/aws_region tags)")
        elif ref is None:
            problem = f"model {dep.model!r} is an ARN or empty: application inference profiles have no per-model quota"
        elif info is None:
            problem = f"model {ref.base!r} is not in the quota mapping (add it under quotas.models)"
        plan.deployments.append(PlannedDeployment(
            deployment=dep.id, model_group=dep.model_group, model=dep.model, aws_account=account, aws_region=region,
            ref=ref, info=info, credentials=credential_source(params.get(dep.id, {}), account, roles, env),
            problem=problem))
    return plan

"""Bedrock model id -> the Service Quotas rows that limit it.

Quota codes are not documented and names are not uniform across model families, so the
join is by name, from a shipped table (bedrock_models.yaml) that `quotas.models` extends.
The inference kind comes from the model id: an inference-profile id (`us.`, `eu.`,
`apac.`, `global.`, ...) draws on the Cross-Region quotas, a plain id on the On-demand ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

PROFILE_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.")
QUOTA_KINDS = ("tokens_per_minute", "requests_per_minute", "tokens_per_day")
ON_DEMAND = "on_demand"
CROSS_REGION = "cross_region"
PERIOD_SECONDS = {"tokens_per_minute": 60.0, "requests_per_minute": 60.0, "tokens_per_day": 86400.0}
_LITELLM_ROUTES = ("bedrock/", "converse/", "invoke/", "converse_like/")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One row of the model table: how Service Quotas names a model family."""

    prefix: str
    quota_names: tuple[str, ...]
    max_output_tokens: int | None = None
    output_burndown: float = 1.0
    source: str = "shipped"  # shipped | config


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A deployment's model as Bedrock sees it."""

    invoked: str  # the ModelId Bedrock (and its CloudWatch metrics) see: us.anthropic.claude-...
    base: str  # without the inference-profile prefix
    inference: str  # on_demand | cross_region


@dataclass(frozen=True, slots=True)
class ListedQuota:
    """One row of list_service_quotas(ServiceCode="bedrock")."""

    name: str
    code: str
    value: float


@dataclass(frozen=True, slots=True)
class MatchedQuota:
    quota: str  # tokens_per_minute | requests_per_minute | tokens_per_day
    name: str
    code: str
    value: float


def model_ref(model: str) -> ModelRef | None:
    """'bedrock/converse/us.anthropic.claude-...' -> ModelRef; None for an ARN or an empty id."""
    model = model.strip()
    changed = True
    while changed:
        changed = False
        for route in _LITELLM_ROUTES:
            if model.startswith(route):
                model, changed = model[len(route):], True
    if not model or model.startswith("arn:"):
        return None  # application inference profiles / provisioned models: no per-model quota row
    for prefix in PROFILE_PREFIXES:
        if model.startswith(prefix):
            return ModelRef(model, model[len(prefix):], CROSS_REGION)
    return ModelRef(model, model, ON_DEMAND)


def _normalize(name: str) -> str:
    return _SPACES.sub(" ", name.strip()).lower()


class ModelTable:
    """The shipped table plus `quotas.models`; the longest matching prefix wins, config first."""

    def __init__(self, rows: Iterable[ModelInfo]) -> None:
        self.rows = sorted(rows, key=lambda r: (r.source != "config", -len(r.prefix)))

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None) -> ModelTable:
        text = resources.files("agent.quotas").joinpath("bedrock_models.yaml").read_text(encoding="utf-8")
        rows = [ModelInfo(prefix=str(r["prefix"]), quota_names=tuple(str(n) for n in r["quota_names"]),
                          max_output_tokens=r.get("max_output_tokens"),
                          output_burndown=float(r.get("output_burndown", 1.0)))
                for r in (yaml.safe_load(text) or {}).get("models", [])]
        shipped = {r.prefix: r for r in rows}
        for prefix, o in (overrides or {}).items():
            base = shipped.get(prefix)
            rows.append(ModelInfo(
                prefix=prefix, quota_names=(o.quota_name,),
                max_output_tokens=o.max_output_tokens or (base.max_output_tokens if base else None),
                output_burndown=o.output_burndown or (base.output_burndown if base else 1.0), source="config"))
        return cls(rows)

    def lookup(self, base_model: str) -> ModelInfo | None:
        # rows are sorted config first, then by prefix length: the first hit is the answer
        return next((row for row in self.rows if base_model.startswith(row.prefix)), None)


def quota_name_candidates(quota: str, inference: str, model_name: str, global_profile: bool = False) -> list[str]:
    """The Service Quotas names one quota of one model may carry, most specific first."""
    if quota == "tokens_per_day":
        return [f"Model invocation max tokens per day for {model_name}"]
    what = "tokens" if quota == "tokens_per_minute" else "requests"
    if inference == ON_DEMAND:
        kinds = ["On-demand"]
    else:
        kinds = (["Global cross-Region"] if global_profile else []) + ["Cross-Region"]
    return [f"{k} InvokeModel {what} per minute for {model_name}" for k in kinds]


def match_quotas(ref: ModelRef, info: ModelInfo, listed: Iterable[ListedQuota]) -> dict[str, MatchedQuota]:
    """quota kind -> the listed row it matched (only the kinds the account has)."""
    by_name = {_normalize(q.name): q for q in listed}
    out: dict[str, MatchedQuota] = {}
    for quota in QUOTA_KINDS:
        for model_name in info.quota_names:
            hit = next((by_name[n] for n in (_normalize(c) for c in quota_name_candidates(
                quota, ref.inference, model_name, ref.invoked.startswith("global."))) if n in by_name), None)
            if hit is not None:
                out[quota] = MatchedQuota(quota, hit.name, hit.code, hit.value)
                break
    return out

"""Event -> span name and attributes under the OpenTelemetry GenAI semantic conventions.

Attributes are split in two: the *dimensions* of a call (operation, provider, models,
server, account, region, deployment, team, key alias, error type...) repeat across
thousands of calls, so they are computed once per distinct combination and cached (the
encoder caches their serialized form too); the per-call values (ids, tokens, cost,
timings) are the only work done for every span.
"""

from __future__ import annotations

from typing import Any

from agent.enrich import host_port
from agent.events import UNKNOWN, Event

AttrValue = str | bool | int | float | tuple[str, ...]
Attrs = tuple[tuple[str, AttrValue], ...]

# LiteLLM custom_llm_provider -> gen_ai.provider.name (well-known values of the conventions).
# Providers the conventions do not name keep LiteLLM's own spelling.
PROVIDERS: dict[str, str] = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "chatgpt": "openai",
    "azure": "azure.ai.openai",
    "azure_text": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "sagemaker": "aws.sagemaker",
    "sagemaker_chat": "aws.sagemaker",
    "anthropic": "anthropic",
    "anthropic_text": "anthropic",
    "vertex_ai": "gcp.vertex_ai",
    "vertex_ai_beta": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "mistral": "mistral_ai",
    "codestral": "mistral_ai",
    "text-completion-codestral": "mistral_ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "perplexity": "perplexity",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
    "watsonx_text": "ibm.watsonx.ai",
}
OTHER = "_OTHER"  # the conventions' value when nothing better is known

# LiteLLM call_type -> gen_ai.operation.name
OPERATIONS: dict[str, str] = {
    "completion": "chat",
    "acompletion": "chat",
    "anthropic_messages": "chat",
    "responses": "chat",
    "aresponses": "chat",
    "text_completion": "text_completion",
    "atext_completion": "text_completion",
    "embedding": "embeddings",
    "aembedding": "embeddings",
    "generate_content": "generate_content",
    "agenerate_content": "generate_content",
    "image_generation": "generate_content",
    "aimage_generation": "generate_content",
}

# LiteLLM's Bedrock route prefixes inside the model name ("converse/anthropic.claude-...")
_BEDROCK_ROUTES = ("converse/", "invoke/", "converse_like/")


def operation_name(event: Event) -> str:
    return OPERATIONS.get(event.call_type, event.call_type or "chat")


def provider_name(event: Event) -> str:
    provider = event.api_provider
    if not provider:
        return OTHER
    return PROVIDERS.get(provider, provider)


def request_model(event: Event) -> str:
    """The model the proxy asked the provider for; the public model group when the call
    never reached a deployment (auth, budget, no deployments available)."""
    model = event.model or event.model_group or event.requested_model
    if event.api_provider == "bedrock":
        for prefix in _BEDROCK_ROUTES:
            if model.startswith(prefix):
                return model[len(prefix) :]
    return model


def response_model(event: Event) -> str:
    """The model that answered. LiteLLM's proxy (1.108.7) restamps `response.model` with the
    public model group ("gpt-lab" although the upstream said "fake-ok"), so an answer that
    merely names the group is attributed to the deployment's model the proxy called."""
    if event.is_failure:
        return ""
    model = event.response_model
    if not model or model in (event.model_group, event.requested_model):
        return request_model(event)
    return model


def error_type(event: Event) -> str:
    """Low-cardinality failure type: LiteLLM's exception class, else the status code."""
    if not event.is_failure:
        return ""
    return event.error_class or event.status_code or OTHER


def span_name(operation: str, model: str) -> str:
    return f"{operation} {model}" if model else operation


def _known(value: str) -> str:
    return "" if value == UNKNOWN else value


def dimension_key(event: Event) -> tuple[Any, ...]:
    """What the dimension attributes depend on; the cache key for them."""
    return (
        event.call_type,
        event.api_provider,
        event.model,
        event.model_group,
        event.requested_model,
        event.attrs.get("fallback_from_group") if event.fallbacks else None,
        event.response_model,
        event.api_base,
        event.aws_account,
        event.aws_region,
        event.deployment,
        event.team,
        event.team_alias,
        event.key_alias,
        event.status,
        event.error_class,
        event.status_code,
        event.stream,
        event.cache_hit,
    )


def dimension_attributes(event: Event) -> tuple[str, Attrs]:
    """(span name, attributes shared by every call with the same dimension_key)."""
    operation = operation_name(event)
    model = request_model(event)
    attrs: list[tuple[str, AttrValue]] = [
        ("gen_ai.operation.name", operation),
        ("gen_ai.provider.name", provider_name(event)),
    ]
    if model:
        attrs.append(("gen_ai.request.model", model))
    answered_by = response_model(event)
    if answered_by:
        attrs.append(("gen_ai.response.model", answered_by))
    if event.api_base:
        host, port = host_port(event.api_base)
        if host:
            attrs.append(("server.address", host))
        if port:
            attrs.append(("server.port", port))
    if event.stream:
        attrs.append(("gen_ai.request.stream", True))
    failure = error_type(event)
    if failure:
        attrs.append(("error.type", failure))
    account, region = _known(event.aws_account), _known(event.aws_region)
    if account or region:
        attrs.append(("cloud.provider", "aws"))
        if account:
            attrs.append(("cloud.account.id", account))
        if region:
            attrs.append(("cloud.region", region))
    for key, value in (
        ("litellm.model_group", event.model_group),
        ("litellm.deployment_id", event.deployment),
        ("litellm.api_provider", event.api_provider),
        ("litellm.team_id", event.team),
        ("litellm.team_alias", event.team_alias),
        ("litellm.key_alias", event.key_alias),
    ):
        if value:
            attrs.append((key, value))
    requested = event.attrs.get("fallback_from_group") or event.requested_model  # the group asked for
    if requested and requested != event.model_group:
        attrs.append(("litellm.requested_model", requested))
    if event.is_failure:
        attrs.append(("litellm.status_code", event.status_code))
    if event.cache_hit:
        attrs.append(("litellm.cache_hit", True))
    return span_name(operation, model), tuple(attrs)


def call_attributes(event: Event) -> list[tuple[str, AttrValue]]:
    """Per-call attributes (never cached): ids, usage, cost, timings, router behaviour."""
    attrs: list[tuple[str, AttrValue]] = []
    if event.response_id:
        attrs.append(("gen_ai.response.id", event.response_id))
    if event.finish_reasons:
        attrs.append(("gen_ai.response.finish_reasons", event.finish_reasons))
    if event.input_tokens or not event.is_failure:
        attrs.append(("gen_ai.usage.input_tokens", event.input_tokens))
    if event.output_tokens or not event.is_failure:
        attrs.append(("gen_ai.usage.output_tokens", event.output_tokens))
    if event.ttft is not None:
        attrs.append(("gen_ai.response.time_to_first_chunk", event.ttft))
    if event.cost_usd or not event.is_failure:
        attrs.append(("litellm.cost_usd", float(event.cost_usd)))
    if event.call_id:
        attrs.append(("litellm.call_id", event.call_id))
    if event.retries:
        attrs.append(("litellm.attempted_retries", event.retries))
    if event.fallbacks:
        attrs.append(("litellm.attempted_fallbacks", event.fallbacks))
    if event.overhead is not None:
        attrs.append(("litellm.overhead", event.overhead))
    if event.queue_time is not None:
        attrs.append(("litellm.queue_time", event.queue_time))
    return attrs


def metric_attributes(event: Event) -> dict[str, AttrValue]:
    """The attributes the conventions put on gen_ai.client.* metrics, plus account/region/deployment."""
    attrs: dict[str, AttrValue] = {
        "gen_ai.operation.name": operation_name(event),
        "gen_ai.provider.name": provider_name(event),
    }
    model = request_model(event)
    if model:
        attrs["gen_ai.request.model"] = model
    answered_by = response_model(event)
    if answered_by:
        attrs["gen_ai.response.model"] = answered_by
    if event.api_base:
        host, port = host_port(event.api_base)
        if host:
            attrs["server.address"] = host
        if port:
            attrs["server.port"] = port
    failure = error_type(event)
    if failure:
        attrs["error.type"] = failure
    account, region = _known(event.aws_account), _known(event.aws_region)
    if account:
        attrs["cloud.account.id"] = account
    if region:
        attrs["cloud.region"] = region
    if event.model_group:
        attrs["litellm.model_group"] = event.model_group
    if event.deployment:
        attrs["litellm.deployment_id"] = event.deployment
    return attrs

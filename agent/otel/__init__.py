"""OpenTelemetry export of LLM calls (GenAI semantic conventions) over OTLP.

The sink itself is `agent.sinks.otel`; this package holds its parts, one job each:
`config` (the `otel:` section and OpenTelemetry's own env vars), `ids` (trace/span ids),
`mapping` (Event -> span fields), `content` (opt-in prompt/completion capture),
`encode` (OTLP protobuf), `sampler`, `resource`, `transport` (HTTP and gRPC senders),
`metrics` (optional OTel metrics) and `exporter` (the queue and its export thread).
"""

"""Bedrock quota headroom: the quota each account and region really has, and how much is in use.

- config.py      the `quotas:` config section
- mapping.py     Bedrock model id -> Service Quotas quota names (+ bedrock_models.yaml, shipped data)
- credentials.py the boto3 session a deployment's quota reads use (as LiteLLM would call Bedrock)
- servicequotas.py  list_service_quotas(ServiceCode="bedrock") per account/region, retried, last values kept
- usage.py       the proxy's own completed and reserved use, per minute/hour bucket (local or shared state)
- account.py     account-wide use from AWS/Bedrock EstimatedTPMQuotaUsage / InvocationThrottles (GetMetricData)
- service.py     the component: refresh loops, utilization, metrics, rule events (Kind.QUOTA)
- cli.py         `gatewatch quotas show`
"""

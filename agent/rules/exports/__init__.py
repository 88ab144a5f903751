"""The rules exported for other systems: Prometheus alerting rules (prometheus.py) and
CloudWatch alarms on the metrics the CloudWatch sink publishes (cloudwatch.py)."""

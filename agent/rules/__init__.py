"""Alert rules evaluated on the event stream (issue 5).

model.py (rule files, validation) -> signals.py (what a rule measures) -> windows.py
(bounded-memory time buckets) -> evaluate.py / budget.py (one rule each) -> state.py
(pending / firing / resolved) -> engine.py (sink + evaluation loops + reload + persistence),
api.py (HTTP), cli.py (`gatewatch rules check|test|export`), testing.py, export.py.
"""

"""Writes benchmark figures into the results table of bench/README.md.

Every benchmark calls `record(...)` for each figure it measures; the row for a figure is
replaced in place, so `make bench` rewrites the table and a single benchmark run updates
only its own rows.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

README = Path(__file__).with_name("README.md")
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
HEADER = "| figure | value | target | command | machine | date |\n|---|---|---|---|---|---|"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def record(figure: str, value: str, command: str, target: str = "") -> None:
    """Insert or replace the row for `figure` and print it."""
    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d")
    cells = [_escape(figure), _escape(value), _escape(target), f"`{_escape(command)}`", _escape(machine()), date]
    row = "| " + " | ".join(cells) + " |"
    print(f"{figure}: {value}" + (f" (target {target})" if target else ""))
    text = README.read_text() if README.exists() else "# Benchmarks\n\n"
    if BEGIN not in text:
        text = text.rstrip("\n") + f"\n\n## Results\n\n{BEGIN}\n{HEADER}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    table, tail = rest.split(END, 1)
    lines = [line for line in table.strip("\n").splitlines() if line.strip()]
    body = [line for line in lines[2:] if not re.match(rf"^\| {re.escape(_escape(figure))} \|", line)]
    body.append(row)
    README.write_text(f"{head}{BEGIN}\n{HEADER}\n" + "\n".join(body) + f"\n{END}{tail}")
    recorded = os.environ.get("GATEWATCH_BENCH_RECORDED")  # set by run_all.py to drop rows no bench makes any more
    if recorded:
        with open(recorded, "a") as fh:
            fh.write(_escape(figure) + "\n")

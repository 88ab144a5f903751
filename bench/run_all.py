"""Run every benchmark in bench/ and rewrite the results table of bench/README.md.

A benchmark is any `bench/*_bench.py` or `bench/bench_*.py` (so a new one is picked up by
being named like that). Each runs as `python -m bench.<name>` from the repository root, in
its own process, one after the other (they pin CPUs and must not overlap), with a time
limit; a failing one is reported and the others still run. The exit status is non-zero
if any failed.

    make bench                                # or: .venv/bin/python bench/run_all.py
    .venv/bin/python bench/run_all.py --only ingest_bench scrape_bench
    .venv/bin/python bench/run_all.py --skip otel_bench
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
NOT_BENCHMARKS = {"run_all", "results", "support", "__init__"}


def discover() -> list[str]:
    names = sorted(p.stem for p in BENCH.glob("*.py")
                   if (p.stem.endswith("_bench") or p.stem.startswith("bench_")) and p.stem not in NOT_BENCHMARKS)
    return names


def table() -> str:
    text = (BENCH / "README.md").read_text()
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    return text.split(begin, 1)[1].split(end, 1)[0].strip() if begin in text and end in text else ""


def prune(succeeded: set[str], recorded: set[str]) -> list[str]:
    """Drop the rows of benchmarks that ran fine this time but no longer make that figure
    (renamed or removed figures): the table then holds only what this run measured, plus
    the rows of benchmarks that failed or were not run."""
    readme = BENCH / "README.md"
    text = readme.read_text()
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    if begin not in text or end not in text:
        return []
    head, rest = text.split(begin, 1)
    body, tail = rest.split(end, 1)
    kept, dropped = [], []
    for line in body.strip("\n").splitlines():
        match = re.match(r"^\| (.*?) \| .* \| `[^`]*-m bench\.(\w+)[^`]*` \|", line)
        if match and match.group(2) in succeeded and match.group(1) not in recorded:
            dropped.append(match.group(1))
            continue
        kept.append(line)
    readme.write_text(f"{head}{begin}\n" + "\n".join(kept) + f"\n{end}{tail}")
    return dropped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", default=None, help="run only these (module names)")
    parser.add_argument("--skip", nargs="+", default=[], help="do not run these")
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("BENCH_TIMEOUT", "1200")),
                        help="seconds per benchmark (default 1200, or $BENCH_TIMEOUT)")
    args = parser.parse_args()
    names = [n for n in discover() if (args.only is None or n in args.only) and n not in args.skip]
    unknown = set(args.only or ()) - set(discover())
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(discover())}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    recorded_file = Path(tempfile.mkstemp(prefix="gatewatch-bench-recorded-")[1])
    env["GATEWATCH_BENCH_RECORDED"] = str(recorded_file)
    outcomes: list[tuple[str, str, float]] = []
    started_all = time.monotonic()
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        started = time.monotonic()
        try:
            code = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT, env=env,
                                  timeout=args.timeout, check=False).returncode
            outcome = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            outcome = f"timed out after {args.timeout:.0f}s"
        outcomes.append((name, outcome, time.monotonic() - started))
    recorded = set(recorded_file.read_text().splitlines())
    recorded_file.unlink()
    for figure in prune({name for name, outcome, _ in outcomes if outcome == "ok"}, recorded):
        print(f"dropped a row no benchmark makes any more: {figure}")
    print(f"\n=== summary ({(time.monotonic() - started_all) / 60:.1f} min) ===")
    for name, outcome, seconds in outcomes:
        print(f"  {name:32s} {outcome:24s} {seconds:6.0f}s")
    print("\n" + table())
    return 0 if all(outcome == "ok" for _, outcome, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

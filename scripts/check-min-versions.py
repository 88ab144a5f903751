#!/usr/bin/env python3
"""Prove the declared lower bounds: install gatewatch at the floor of every runtime dependency.

pyproject.toml says `prometheus-client>=0.23`, `aiohttp>=3.9`, …; nothing else tests those
floors, since every other environment resolves to the newest releases. This script:

1. checks that every third-party module `agent/` imports belongs to a distribution that
   pyproject.toml declares (runtime dependencies, or the optional `redis` extra);
2. creates a fresh virtualenv, installs this checkout (a real wheel, not editable) with each
   runtime dependency pinned to its declared minimum (`>=X` becomes `==X`), plus the test
   runners only (pytest and its plugins, latest);
3. imports every module of `agent`, then runs a smoke subset of the tests that touches each
   dependency (aiohttp server and client, prometheus exposition, msgspec parsing, numpy and
   Jinja2 rules, apprise delivery to local receivers, OTLP over HTTP and gRPC, YAML config).

Usage: scripts/check-min-versions.py [--keep DIR] [--python PY]. Exit 0 when all holds.
Run by `make test` (target `min-versions`); pip's cache keeps it to a minute or two.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

try:
    from packaging.version import Version
except ImportError:  # outside the test venv: pip's own copy
    from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent

# test files that exercise every runtime dependency without extra servers or tools
SMOKE_TESTS = [
    "tests/test_parse_litellm.py",
    "tests/test_pipeline.py",
    "tests/test_server.py",
    "tests/test_config.py",
    "tests/test_rules_model.py",
    "tests/test_rules_windows.py",
    "tests/test_rules_engine.py",
    "tests/test_alerts_templates.py",
    "tests/test_notify_channels.py",
    "tests/test_otel_units.py",
    "tests/test_otel_export.py",
]
TEST_RUNNERS = ["pytest>=8", "pytest-asyncio>=0.24", "pytest-timeout>=2.3"]
EXTRAS_ALLOWED = ("redis",)  # imported only when `state.url` names a Redis


def declared() -> tuple[dict[str, str], set[str]]:
    """({runtime dependency: its floor}, distributions agent/ may import from)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [line.split(";")[0].strip() for line in project["dependencies"]]
    floors, names = {}, set()
    for req in runtime:
        name, _, floor = req.partition(">=")
        name = name.strip()
        names.add(canonical(name))
        if not floor:
            raise SystemExit(f"pyproject.toml: {req!r} declares no lower bound")
        floors[name] = floor.split(",")[0].strip()
    for extra in EXTRAS_ALLOWED:  # the optional extras are installed at their floors too
        for req in project["optional-dependencies"][extra]:
            name, _, floor = req.split(";")[0].strip().partition(">=")
            names.add(canonical(name))
            if floor:
                floors[name.strip()] = floor.split(",")[0].strip()
    return floors, names


def canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def third_party_imports() -> dict[str, set[str]]:
    """{dotted module: files of agent/ importing it}, stdlib and agent itself left out."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "agent").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top != "agent" and top not in sys.stdlib_module_names:
                    found.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return found


OWNER_PROBE = r"""
import importlib.util, json, sys
from importlib.metadata import distributions
owners = {}
for dist in distributions():
    for f in dist.files or ():
        owners.setdefault(str(dist.locate_file(f)), dist.metadata["Name"])
out = {}
for module in json.loads(sys.argv[1]):
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    origin = spec.origin if spec and spec.origin not in (None, "namespace") else None
    if origin is None and spec and spec.submodule_search_locations:
        origin = next(iter(spec.submodule_search_locations)) + "/__init__.py"
    out[module] = owners.get(origin) if origin else None
print(json.dumps(out))
"""


def check_declared(python: Path, allowed: set[str]) -> list[str]:
    """Problems: imported modules whose distribution pyproject.toml does not declare."""
    import json

    imports = third_party_imports()
    owners = json.loads(run([str(python), "-c", OWNER_PROBE, json.dumps(sorted(imports))], capture=True))
    problems = []
    for module, files in sorted(imports.items()):
        owner = owners.get(module)
        if owner is None and module.split(".")[0] in {canonical(a).replace("-", "_") for a in EXTRAS_ALLOWED}:
            continue  # an optional extra, not installed here
        if owner is None or canonical(owner) not in allowed:
            problems.append(f"{module} (imported by {', '.join(sorted(files))}) comes from "
                            f"{owner or 'no installed distribution'}, which pyproject.toml does not declare")
    return problems


def run(cmd: list[str], capture: bool = False, quiet: bool = False, **kwargs) -> str:
    """Run a step; `quiet` keeps its stderr (pip's warnings) unless the step fails."""
    print("+", " ".join(cmd[:6]) + (" …" if len(cmd) > 6 else ""), flush=True)
    result = subprocess.run(cmd, text=True, stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if quiet else None, **kwargs)
    if result.returncode:
        if quiet:
            sys.stderr.write(result.stderr[-5000:])
        raise SystemExit(f"failed ({result.returncode}): {' '.join(cmd)}")
    return result.stdout or ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", help="build the virtualenv here and keep it (default: a temporary folder)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the new virtualenv")
    args = parser.parse_args()

    floors, allowed = declared()
    with tempfile.TemporaryDirectory(prefix="gatewatch-minver-") as tmp:
        env_dir = Path(args.keep) if args.keep else Path(tmp) / "venv"
        # the pip that runs this script installs into the new venv (--python): no ensurepip
        run([args.python, "-m", "venv", "--without-pip", "--clear", str(env_dir)])
        python = env_dir / "bin" / "python"
        constraints = Path(tmp) / "floors.txt"
        constraints.write_text("".join(f"{name}=={floor}\n" for name, floor in floors.items()))
        print("floors:", ", ".join(f"{n}=={v}" for n, v in floors.items()), flush=True)
        run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
             "--disable-pip-version-check", "--only-binary", ":all:", "--no-binary", "gatewatch",
             "-c", str(constraints), f"{ROOT}[{','.join(EXTRAS_ALLOWED)}]", *TEST_RUNNERS], quiet=True)
        installed = run([sys.executable, "-m", "pip", "--python", str(python), "freeze", "--all"],
                        capture=True, quiet=True)
        pinned = dict(line.split("==", 1) for line in installed.splitlines() if "==" in line)
        pinned = {canonical(name): version for name, version in pinned.items()}
        wrong = [f"{n}: {pinned.get(canonical(n))} installed, floor {v}" for n, v in floors.items()
                 if Version(pinned.get(canonical(n), "0")) != Version(v)]
        if wrong:
            raise SystemExit("not at the floor: " + "; ".join(wrong))

        problems = check_declared(python, allowed)
        if problems:
            print("\n".join(["undeclared imports:", *problems]), file=sys.stderr)
            return 1
        print(f"every third-party import of agent/ is declared ({len(third_party_imports())} modules)", flush=True)

        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        run([str(python), "-c", "import importlib, pkgutil, agent\n"
             "for m in pkgutil.walk_packages(agent.__path__, 'agent.'): importlib.import_module(m.name)"],
            cwd=tmp, env=env)
        # -p no:cacheprovider: leave the checkout as it was; rootdir = the checkout for its conftest
        run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not e2e", *SMOKE_TESTS],
            cwd=ROOT, env=env)
    print("minimum versions: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

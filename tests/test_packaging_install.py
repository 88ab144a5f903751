"""What a user installs: one version, `--version`, and a `make run` without the test tools."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import agent
from agent.cli import main
from tests.conftest import ROOT


def test_the_version_comes_from_pyproject_only():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert agent.__version__ == declared
    assert declared not in (ROOT / "agent" / "__init__.py").read_text()  # not written twice


def test_dash_dash_version_and_the_version_verb_agree(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    flag = capsys.readouterr().out
    assert main(["version"]) == 0
    assert flag == capsys.readouterr().out == f"gatewatch {agent.__version__}\n"
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "--version"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, f"gatewatch {agent.__version__}\n")


def test_make_run_installs_the_runtime_dependencies_only(tmp_path):
    venv = tmp_path / "venv"
    plan = subprocess.run(["make", "-n", "run", f"VENV={venv}"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert plan.returncode == 0, plan.stderr
    installs = [line for line in plan.stdout.splitlines() if " install " in line]
    assert any(line.endswith(" -e .") for line in installs), plan.stdout
    assert not any("[test]" in line for line in installs), plan.stdout
    assert f"{venv}/bin/gatewatch run" in plan.stdout


def test_make_test_checks_the_minimum_versions():
    plan = subprocess.run(["make", "-n", "test", "VENV=.venv"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert "scripts/check-min-versions.py" in plan.stdout

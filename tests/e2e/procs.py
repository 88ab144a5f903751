"""Child processes of the e2e lab: start with output to a log file, wait until ready, always stop.

Each process runs in its own session (process group) so stopping it also stops whatever it
spawned (LiteLLM's uvicorn workers). Three layers make sure nothing outlives the test run:
the lab's finalizer (a failed test), a registry stopped at interpreter exit (an interrupted
run), and on Linux a parent-death signal (the test runner itself killed, e.g. a CI timeout).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_LIVE: list[ManagedProcess] = []
_PR_SET_PDEATHSIG = 1
try:  # looked up here, not in the child: nothing may import or allocate between fork and exec
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the test runner dies (Linux)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ProcessDied(RuntimeError):
    pass


class ManagedProcess:
    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:  # stdout and stderr interleaved, as a container runtime would
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.cwd, start_new_session=True,
                                         preexec_fn=_die_with_parent if _PRCTL is not None else None)
        _LIVE.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise ProcessDied(f"{self.name} exited with {code}; last lines of {self.log_path}:\n{self.log_tail()}")

    def wait_http(self, url: str, timeout: float, headers: Mapping[str, str] | None = None,
                  ok: Callable[[int, bytes], bool] = lambda status, body: status == 200) -> None:
        """Poll `url` until `ok(status, body)`; fail early if the process dies."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            request = urllib.request.Request(url, headers=dict(headers or {}))
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    body = response.read()
                    if ok(response.status, body):
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} not ready at {url} after {timeout:.0f}s ({last}); "
                           f"last lines of {self.log_path}:\n{self.log_tail()}")

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # children that ignored SIGTERM but share the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self in _LIVE:
            _LIVE.remove(self)
        return self.proc.returncode


def stop_all() -> None:
    for process in reversed(list(_LIVE)):
        process.stop(grace=5.0)


atexit.register(stop_all)

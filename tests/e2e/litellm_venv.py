"""A cached virtualenv holding `litellm[proxy]`, separate from gatewatch's own venv.

LiteLLM pins many libraries (openai, pydantic, fastapi...) that must never mix with ours,
so the proxy runs from its own venv under `.cache/` (gitignored, reused between runs).
For the default version the exact set of packages is pinned by a lock file next to this
module (`litellm-<version>.lock.txt`, a `pip freeze` of a good install), so CI from a clean
clone installs the same thing every time. Another version can be tried with
`GATEWATCH_E2E_LITELLM_VERSION=1.x.y`: without a lock file it installs whatever PyPI
resolves for `litellm[proxy]==1.x.y`.

The version matrix: `GATEWATCH_E2E_LITELLM_VERSION=newest` is NEWEST_VERSION, the newest
LiteLLM that installs from the package index here, with its own lock file. Its `[proxy]`
extra cannot install (it requires a `litellm-proxy` release the index does not have), so
its lock was made from `litellm-<version>.requirements.txt`: `litellm==<version>` plus the
`[proxy]` extra's requirements without `litellm-proxy` (which the proxy never imports).

A file lock makes concurrent test runs on one machine wait for a single install instead of
corrupting the venv; a stamp file written last marks a complete install.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEFAULT_VERSION = "1.108.7"
NEWEST_VERSION = "1.110.2"  # `pip index versions litellm` here (December 2026); see the README's matrix
# prometheus_client is not a dependency of litellm[proxy], but the `prometheus` callback needs it
EXTRA_PACKAGES = ("prometheus_client",)
INSTALL_TIMEOUT = 900.0


def litellm_version() -> str:
    wanted = os.environ.get("GATEWATCH_E2E_LITELLM_VERSION") or DEFAULT_VERSION
    return NEWEST_VERSION if wanted == "newest" else wanted


def lock_file(version: str) -> Path:
    return HERE / f"litellm-{version}.lock.txt"


def requirements_file(version: str) -> Path:
    """What to install for a version whose `litellm[proxy]` does not resolve (no lock yet)."""
    return HERE / f"litellm-{version}.requirements.txt"


def cache_dir() -> Path:
    return Path(os.environ.get("GATEWATCH_E2E_CACHE") or ROOT / ".cache")


def _requirements(version: str) -> tuple[list[str], str]:
    """pip arguments and a digest of them (a changed lock file rebuilds the venv)."""
    lock = lock_file(version)
    if lock.is_file():
        text = lock.read_text()
        return ["-r", str(lock)], hashlib.sha256(text.encode()).hexdigest()
    recipe = requirements_file(version)
    if recipe.is_file():
        return ["-r", str(recipe)], hashlib.sha256(recipe.read_text().encode()).hexdigest()
    wanted = [f"litellm[proxy]=={version}", *EXTRA_PACKAGES]
    return wanted, hashlib.sha256(" ".join(wanted).encode()).hexdigest()


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _import_error(venv: Path) -> str | None:
    """None when the proxy and its prometheus callback import, else the error text."""
    python = venv_python(venv)
    if not python.exists():
        return f"{python} missing"
    probe = subprocess.run([str(python), "-c", "import litellm.proxy.proxy_cli, prometheus_client"],
                           capture_output=True, text=True, timeout=120, check=False)
    return None if probe.returncode == 0 else probe.stderr[-2000:]


def _healthy(venv: Path, stamp: Path, digest: str) -> bool:
    """Cheap check of a finished install (the full import check ran before the stamp)."""
    if not stamp.is_file() or stamp.read_text().strip() != digest:
        return False
    python = venv_python(venv)
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", "import importlib.util as u, sys; sys.exit(not all("
                            "u.find_spec(m) for m in ('litellm', 'prometheus_client')))"],
                           capture_output=True, timeout=60, check=False)
    return probe.returncode == 0


def ensure_litellm_venv(version: str | None = None, log=print) -> Path:
    """Return the venv directory with litellm[proxy]==version, installing it once if needed."""
    version = version or litellm_version()
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    venv = base / f"litellm-venv-{version}"
    stamp = venv / ".gatewatch-e2e-ok"
    args, digest = _requirements(version)
    with open(base / f"litellm-venv-{version}.lock", "w") as lock_fh:
        fcntl.flock(lock_fh, fcntl.LOCK_EX)  # another run may be installing: wait for it
        if _healthy(venv, stamp, digest):
            return venv
        started = time.monotonic()
        log(f"e2e: installing litellm[proxy]=={version} into {venv} (cached for later runs)")
        if venv.exists():
            shutil.rmtree(venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        pip = [str(venv_python(venv)), "-m", "pip", "--disable-pip-version-check", "--quiet"]
        subprocess.run([*pip, "install", "--upgrade", "pip"], check=True, timeout=INSTALL_TIMEOUT)
        result = subprocess.run([*pip, "install", *args], capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                                check=False)
        if result.returncode != 0:
            lines = [line for line in (result.stdout + result.stderr).splitlines() if not line.startswith("WARNING:")]
            tail = "\n".join(lines[-30:])
            raise RuntimeError(f"pip install of litellm[proxy]=={version} failed:\n{tail}")
        error = _import_error(venv)
        if error is not None:
            raise RuntimeError(f"litellm venv does not import: {error}")
        stamp.write_text(digest + "\n")
        log(f"e2e: litellm venv ready in {time.monotonic() - started:.0f}s")
        return venv


def installed_version(venv: Path) -> str:
    out = subprocess.run([str(venv_python(venv)), "-c",
                          "from importlib.metadata import version; print(version('litellm'))"],
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip()


def freeze(venv: Path) -> str:
    """`pip freeze` of the venv: how the lock file is (re)made."""
    out = subprocess.run([str(venv_python(venv)), "-m", "pip", "freeze", "--disable-pip-version-check"],
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


if __name__ == "__main__":  # python -m tests.e2e.litellm_venv [--freeze]
    path = ensure_litellm_venv()
    print(path, installed_version(path))
    if "--freeze" in sys.argv:
        version = litellm_version()
        what = (requirements_file(version).name if requirements_file(version).is_file()
                else f"litellm[proxy]=={version} + {' '.join(EXTRA_PACKAGES)}")
        lock_file(version).write_text(
            f"# pip freeze of {what} (python -m tests.e2e.litellm_venv --freeze)\n" + freeze(path))

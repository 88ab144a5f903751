"""Dependencies the installed set needs on *another* Python the image may be built on.

`pip freeze` records what this interpreter needed. redis, for one, needs `async-timeout`
only on Python < 3.11.3: a lock made on 3.11.7 lacks it and the image built on bookworm's
python3 (3.11.2) fails `pip check`. Run by scripts/lock-deps.sh with the lock venv's python:

    python lock_conditional.py requirements          -> `name<specifier>` lines to pip install
    python lock_conditional.py render BEFORE AFTER   -> the lock: AFTER (freeze with them installed),
                                                        the lines not in BEFORE qualified by markers

The supported interpreters are CPython 3.11.x (the Dockerfile's base; bookworm ships 3.11.2)
on Linux x86_64 and aarch64 (ECS on Graviton). tests/test_deploy_docker.py checks the lock
against the same set.
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

MINOR = "3.11"
MACHINES = ("x86_64", "aarch64")


def environments() -> list[dict[str, str]]:
    base = default_environment()
    return [{**base, "python_version": MINOR, "python_full_version": f"{MINOR}.{patch}",
             "implementation_version": f"{MINOR}.{patch}", "platform_machine": machine,
             "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
             "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
            for patch in range(0, 30) for machine in MACHINES]


def conditional() -> dict[str, tuple[list[str], list[str]]]:
    """name -> (specifiers, markers) of requirements true on some supported env but not here."""
    here = {**default_environment(), "extra": ""}
    envs = environments()
    found: dict[str, tuple[list[str], list[str]]] = {}
    for dist in metadata.distributions():
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(here):
                continue
            if not any(req.marker.evaluate(env) for env in envs):
                continue
            specs, markers = found.setdefault(canonicalize_name(req.name), ([], []))
            specs.append(f"{req.name}{req.specifier}")
            markers.append(str(req.marker))
    return found


def either(markers: list[str]) -> str:
    unique = sorted(set(markers))
    return unique[0] if len(unique) == 1 else " or ".join(f"({m})" for m in unique)


def frozen(path: str) -> dict[str, str]:
    lines = [line.strip() for line in open(path) if line.strip() and not line.startswith("#")]
    return {canonicalize_name(line.split("==")[0]): line for line in lines}


def main(argv: list[str]) -> int:
    found = conditional()
    if argv[0] == "requirements":
        for specs, _ in found.values():
            print("\n".join(specs))
        return 0
    before, after = frozen(argv[1]), frozen(argv[2])
    # a package pulled in only by a conditional one (none today) is as conditional as all of them
    fallback = either([m for _, markers in found.values() for m in markers]) if found else ""
    for name, line in after.items():
        if name in before:
            print(line)
        else:
            print(f"{line} ; {either(found[name][1]) if name in found else fallback}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

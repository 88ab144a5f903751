#!/usr/bin/env python3
"""Keep N cores busy for a bounded time, then stop by itself: a busy CI runner on demand.

The suite must pass while other work competes for the CPU (timers fire late, threads get
scheduled late, subprocesses start slowly). Run this beside the tests to prove it:

    python3 scripts/cpu-hog.py --cores 2 --seconds 3600 &
    for i in 1 2 3; do make test || break; done
    kill %1    # or let it stop by itself at the deadline

Each worker is a separate process spinning in pure Python (no I/O, no memory growth). The
parent exits when the deadline passes, on SIGTERM/SIGINT, and the workers exit when their
own deadline passes or their parent is gone, so a killed parent leaves nothing behind.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import time


def spin(deadline: float, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    x = 0
    while True:
        for _ in range(200_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        if time.monotonic() >= deadline or os.getppid() != parent:
            return


def main() -> int:
    parser = argparse.ArgumentParser(description="Keep N cores busy for a bounded time.")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="busy processes (default: all cores)")
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long (default 600, max 86400)")
    args = parser.parse_args()
    if args.cores < 1 or not 0 < args.seconds <= 86400:
        parser.error("--cores must be >= 1 and --seconds in (0, 86400]")
    deadline = time.monotonic() + args.seconds
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=spin, args=(deadline, os.getpid()), daemon=True) for _ in range(args.cores)]
    for worker in workers:
        worker.start()

    def stop(signum: int, _frame: object) -> None:
        for worker in workers:
            worker.terminate()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"cpu-hog: {args.cores} busy processes for {args.seconds:.0f}s (pid {os.getpid()})", file=sys.stderr,
          flush=True)
    for worker in workers:
        worker.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())

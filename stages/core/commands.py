"""git and dvc as subprocesses: their output, or an error that names the command and says what it printed.

Only the standard library: the Ray engine (stages/experiments/cluster.py) runs on nodes that import little.
"""

from __future__ import annotations

import re
import subprocess
import time

DVC_TRIES = 5  # tries of a dvc command that can lose a race with the queue's workers
DVC_RETRY_S = 2


def git(*args: str, strip: bool = True) -> str:
    """git's stdout; a failure stops with one line."""
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: `git {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout.strip() if strip else result.stdout


def dvc(*args: str, retry_if: re.Pattern | None = None) -> str:
    """`dvc *args`'s stdout; a failure whose message matches `retry_if` is tried DVC_TRIES times in all."""
    for attempt in range(1, DVC_TRIES + 1):
        result = subprocess.run(["dvc", *args], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout
        message = result.stderr.strip() or result.stdout.strip()
        if retry_if is None or not retry_if.search(message) or attempt == DVC_TRIES:
            raise SystemExit(f"error: `dvc {' '.join(args)}` failed:\n{message}")
        time.sleep(DVC_RETRY_S)

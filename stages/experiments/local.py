"""The local engine of a study: each round's experiments queued with `dvc exp run --queue` and run by
`dvc exp run --run-all`, with the queue's failure modes handled (workers that die, files that go)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from stages.core.commands import dvc, git

# a running experiment's info file (.dvc/tmp/exps/run/<rev>/<rev>.run, standalone/run/ for --temp runs)
RUNNING_INFO_GONE = re.compile(r"No such file or directory: '[^']*/\.dvc/tmp/exps/[^']*\.run'")


def experiments() -> dict[str, str]:
    """{name: commit} of the finished experiments based on the current commit, from `dvc exp show --json`."""
    found = {}
    # `exp show` lists the queue's active experiments, then reads each one's info file, which a worker
    # that finishes meanwhile removes (dvc 3.67, collect_active_data; seen in CI): that failure is retried
    shown = dvc("exp", "show", "--json", "--hide-queued", "--hide-failed", retry_if=RUNNING_INFO_GONE)
    for commit in json.loads(shown or "[]"):
        for experiment in commit.get("experiments") or []:
            if (experiment.get("executor") or {}).get("state", "success") != "success":
                continue  # still running: its commit is not there yet
            for rev in experiment.get("revs") or []:
                if rev.get("name") and not rev.get("error"):
                    found[rev["name"]] = rev["rev"]
    return found


class LocalQueue:
    """Each round's experiments queued with `dvc exp run --queue` and run by `dvc exp run --run-all`."""

    def __init__(self, jobs: int):
        self.jobs = jobs

    def start(self, study: str) -> None:
        self.study = study

    def sync(self) -> None:
        """The experiments are made in this repository: nothing to fetch."""

    def stop(self) -> None:
        pass

    def run(self, todo: dict[str, dict], lock: str | None = None) -> dict[str, str]:
        remaining = dict(todo)
        for start in range(1, QUEUE_STARTS + 1):
            finished = self.run_queue(remaining, lock)
            made = set(experiments())
            remaining = {name: params for name, params in remaining.items() if name not in made}
            if finished or not remaining:
                break
            # DVC's local queue runs on kombu's filesystem broker, whose worker can die reading a message
            # while it is written (JSONDecodeError, treeverse/dvc-task#73): queue the rest again.
            print(
                f"study {self.study}: DVC's queue workers exited with {len(remaining)} experiments not run "
                f"(start {start} of {QUEUE_STARTS}); queueing them again",
                file=sys.stderr,
            )
        else:
            raise SystemExit(
                f"error: DVC's queue workers exited {QUEUE_STARTS} times with experiments still queued "
                f"({', '.join(remaining)}); `dvc queue logs <experiment>` shows what ran; run the same "
                "command again (finished experiments are kept)"
            )
        if remaining:  # the queue's later rounds need this one's outputs: stop here
            failed = sorted(remaining)
            raise SystemExit(
                f"error: {len(failed)} experiments failed: {', '.join(failed)}; see `dvc queue logs "
                f"{failed[0]}`, fix the cause and run the same command again (finished experiments are kept)"
            )
        return {}

    def run_queue(self, todo: dict[str, dict], lock: str | None) -> bool:
        """Queue `todo` and run it with `dvc exp run --run-all`; False if the queue's workers died first."""
        with workspace_lock(lock):  # the queue takes the workspace as it is, dvc.lock included
            for experiment, params in todo.items():
                dvc("exp", "run", "--queue", "--name", experiment, *[f"-S{k}={v}" for k, v in params.items()])
        workers = min(self.jobs, len(todo))
        env = dict(os.environ)
        if workers > 1:  # a share of the cores per worker: a torch thread per core each runs 4x slower
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
        print(
            f"study {self.study}: running {len(todo)} experiments, {workers} at once (dvc exp run --run-all)"
        )
        run_all = subprocess.Popen(["dvc", "exp", "run", "--run-all", "--jobs", str(workers)], env=env)
        return wait_for_queue(run_all)


@contextlib.contextmanager
def workspace_lock(lock: str | None):
    """The workspace's dvc.lock replaced by `lock` inside the block, then put back as it was.

    DVC restores a stage whose deps match dvc.lock from the outputs the lock names, and reruns it when those
    are not in the cache; it looks in the run cache only for a stage the lock does not match. The commit's
    dvc.lock names the outputs of whoever made the baseline, which another CPU (or a fresh clone without a
    remote) does not have, so every experiment would remake the starting point. Queued from the first
    experiment's dvc.lock, the rest restore it from this study's own outputs.
    """
    path = Path("dvc.lock")
    if lock is None:
        yield
        return
    original = path.read_bytes() if path.exists() else None
    path.write_text(lock)
    try:
        yield
    finally:
        if original is None:
            path.unlink()
        else:
            path.write_bytes(original)


def experiment_lock(commit: str) -> str:
    """An experiment's dvc.lock, from its commit."""
    return git("show", f"{commit}:dvc.lock", strip=False)


QUEUE_CHECK_S = 30  # how often a running queue's workers are checked


QUEUE_DEAD_CHECKS = 3  # checks in a row without a live worker that make a queue dead


QUEUE_STARTS = 3  # times a round's queue is started before the study stops


def wait_for_queue(run_all: subprocess.Popen) -> bool:
    """Wait for `dvc exp run --run-all`; False if the queue's workers died first. The command waits without
    limit for each queued experiment to start, so when its workers exit first (seen in CI: both workers
    defunct, the command waiting forever) it is stopped and what is still queued removed."""
    dead = 0
    while True:
        try:
            run_all.wait(timeout=QUEUE_CHECK_S)
            return True
        except subprocess.TimeoutExpired:
            pass
        dead = 0 if queue_workers_alive() else dead + 1
        if dead == QUEUE_DEAD_CHECKS:
            run_all.kill()
            run_all.wait()
            subprocess.run(["dvc", "queue", "remove", "--queued"], capture_output=True)
            return False


def queue_workers_alive() -> bool:
    return bool(queue_worker_pids())


def queue_worker_pids() -> list[int]:
    """The live (not defunct) `dvc exp queue-worker` processes of this repository, from /proc."""
    here = Path.cwd().resolve()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"queue-worker" not in (proc / "cmdline").read_bytes():
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = (proc / "cwd").resolve()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state != "Z" and (cwd == here or here in cwd.parents):
            pids.append(int(proc.name))
    return pids

"""The study on a Ray cluster: each experiment a Ray task in its own clone, shared through git and DVC.

    python -m stages.study run --engine ray --address head:6379 \
        --gpus-per-experiment 1 --cpus-per-experiment 8

stages/study.py keeps the rounds (the first experiment makes the shared starting point, the others restore
it); this module runs one round's experiments. The coordinator (the process that runs the command) needs the
study's commit on a git remote (`--git-remote`, default origin) and a DVC remote every node reaches (the
repository's default remote, or `--dvc-remote`). Each experiment is one Ray task asking for
`--cpus-per-experiment` CPUs and `--gpus-per-experiment` GPUs, so Ray never runs more experiments at once
than the cluster has slots. A task, on whichever node Ray picks:

1. clones the git remote at the study's commit into <workdir>/<experiment>/repo (a fresh clone per attempt),
   points the clone's DVC remote at the study's, and links the clone's checkpoints/ to
   <checkpoints>/<experiment> (outside the clone, so an attempt that dies leaves its Trainer checkpoints);
2. `dvc pull --run-cache --allow-missing`: the run-cache entries and outputs earlier experiments pushed;
3. `dvc exp run --pull --name <experiment> -S ...`: stages another experiment already made are restored
   from the run cache, the rest run (a training stage resumes from its last checkpoint, if any);
4. `dvc exp push --run-cache <git remote> <experiment>`: outputs and run cache to the DVC remote, the
   experiment's commit to the git remote; then it deletes the clone (the log stays).

The coordinator then runs `dvc exp pull` and the study reads the experiments as it does after a local queue.

Faults. Ray retries a task whose worker process dies (`--retries`, default 2); the retry clones again and,
where <checkpoints> is storage the retrying node also sees (the same node, or a shared filesystem passed as
`--checkpoints`), resumes training from the dead attempt's checkpoint. The dvc process tree of an attempt
dies with its worker (a supervisor process gets SIGTERM from the kernel when the worker dies and kills its
process group), so no orphan goes on writing. An experiment whose `dvc exp run` fails is not retried (the
same inputs fail the same way): it is reported by name with the tail of its log, and the others go on.

This module imports only the standard library at the top: its task function travels to the workers by value
(cloudpickle), so a worker needs Python, git and DVC with the project's dependencies, not this checkout.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from stages.core.commands import dvc, git

INSTALL = "pip install -c constraints.txt -e '.[cluster]'"
LOG_TAIL = 30  # lines of a failed experiment's log in the report
PROGRESS = ("Running stage", "Stage '")  # dvc's per-stage lines, echoed to the coordinator

# DVC's run cache records the files of `cache: false` outputs (metrics/*.json, plots) too, but neither
# `dvc push` nor `dvc pull` moves them (they are not cached outputs): without them a node cannot restore a
# stage that has such outputs (score, sft, grpo, evaluate) from another node's run, and runs it again. This
# moves the files the run-cache entries name for those outputs, through DVC's own object databases.
UNCACHED_OUTPUTS = """
import sys
from pathlib import Path
import yaml
from dvc.repo import Repo
from dvc_data.hashfile.hash_info import HashInfo
from dvc_data.hashfile.transfer import transfer
repo = Repo(".")
uncached = {str(out.def_path) for stage in repo.index.stages for out in stage.outs if not out.use_cache}
oids = set()
for entry in Path(repo.cache.legacy.path, "runs").glob("*/*/*"):
    for out in yaml.safe_load(entry.read_text()).get("outs") or []:
        if out.get("path") in uncached and out.get("md5"):
            oids.add(out["md5"])
local, remote = repo.cache.local, repo.cloud.get_remote_odb(None, "run cache")
source, destination = (local, remote) if sys.argv[1] == "push" else (remote, local)
present = set(source.oids_exist(oids))
transfer(source, destination, {HashInfo("md5", oid) for oid in present})
print(f"{sys.argv[1]}: {len(present)} files of run-cached outputs with cache: false")
"""

# Runs the command in its own process group (the Popen starts a new session) and kills that group when the Ray
# worker above it dies: the kernel then sends it SIGTERM (PR_SET_PDEATHSIG), which the command's own children,
# grandchildren of the worker, would not get. Armed here, not in a preexec_fn: Ray workers are threaded.
SUPERVISOR = """
import ctypes, os, signal, subprocess, sys
def stop(*_):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGTERM, stop)
ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the worker died before the signal was armed
    stop()
sys.exit(subprocess.call(sys.argv[2:]))
"""


def _supervised(command: list[str], cwd: Path, task_dir: Path, env: dict, log, echo: str) -> int:
    """Run `command` under the supervisor, its output appended to `log` and dvc's stage lines printed."""
    process = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(os.getpid()), *command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    (task_dir / "attempt.pgid").write_text(str(process.pid))
    shown = " ".join("<script>" if "\n" in arg else arg for arg in command)
    log.write(f"$ {shown}\n")
    log.flush()
    for line in process.stdout:
        log.write(line)
        log.flush()
        if line.startswith(PROGRESS):
            print(f"{echo}: {line.rstrip()}", flush=True)
    return process.wait()


def _kill_previous_attempt(task_dir: Path) -> None:
    """A retry on the node of a dead attempt: make sure nothing of that attempt still runs."""
    pgid_file = task_dir / "attempt.pgid"
    if pgid_file.is_file():
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            os.killpg(int(pgid_file.read_text()), signal.SIGKILL)


def run_experiment(spec: dict) -> dict:
    """One experiment, start to push; a Ray task. Returns its outcome, never raises for a failed run."""
    task_dir = Path(spec["workdir"]) / spec["experiment"]
    task_dir.mkdir(parents=True, exist_ok=True)
    _kill_previous_attempt(task_dir)
    attempt = len(list(task_dir.glob("attempt-*.json"))) + 1
    started = time.time()
    node = socket.gethostname()
    record = {"attempt": attempt, "pid": os.getpid(), "node": node, "start": started}
    (task_dir / f"attempt-{attempt}.json").write_text(json.dumps(record))
    repo = task_dir / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    shared = spec["checkpoints"]
    checkpoints = Path(shared) / spec["experiment"] if shared else task_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    # never empty, so a finished run's clean-up (training/checkpoints.py) stops above the link, keeping it
    (checkpoints / "EXPERIMENT").write_text(spec["experiment"] + "\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(repo),
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        # a torch thread per requested CPU, as the local queue gives each worker its share of the cores
        "OMP_NUM_THREADS": str(spec["threads"]),
    }
    name = spec["experiment"]
    clone = [
        ["git", "clone", "-q", "--no-checkout", spec["git_url"], str(repo)],
        ["git", "-C", str(repo), "checkout", "-q", spec["commit"]],
        ["git", "-C", str(repo), "config", "user.name", spec["git_user"]],
        ["git", "-C", str(repo), "config", "user.email", spec["git_email"]],
    ]
    experiment = [
        ["dvc", "remote", "add", "--local", "--force", "--default", "study", spec["dvc_url"]],
        ["dvc", "pull", "--run-cache", "--allow-missing"],
        [sys.executable, "-c", UNCACHED_OUTPUTS, "pull"],
        ["dvc", "exp", "run", "--pull", "--name", name, *[f"-S{k}={v}" for k, v in spec["params"].items()]],
        [sys.executable, "-c", UNCACHED_OUTPUTS, "push"],
        ["dvc", "exp", "push", "--run-cache", spec["git_url"], name],
    ]
    log_path = task_dir / "log.txt"
    with log_path.open("a") as log:
        log.write(f"=== {name}: attempt {attempt} on {node}, pid {os.getpid()}, {time.ctime(started)}\n")
        rc = 0
        for step in clone:
            if rc == 0:
                rc = _supervised(step, task_dir, task_dir, env, log, name)
        if rc == 0:  # the clone's checkpoints/ is the folder that outlives the attempt
            (repo / "checkpoints").symlink_to(checkpoints.resolve(), target_is_directory=True)
        for step in experiment:
            if rc == 0:
                rc = _supervised(step, repo, task_dir, env, log, name)
        log.write(f"=== {name}: attempt {attempt} {'done' if rc == 0 else f'failed ({rc})'}\n")
    if rc == 0:
        shutil.rmtree(repo, ignore_errors=True)
    return {**record, "experiment": name, "end": time.time(), "ok": rc == 0, "log": str(log_path),
            "log_tail": log_path.read_text().splitlines()[-LOG_TAIL:]}  # fmt: skip


def dvc_remote_url(name: str | None) -> str:
    """The URL of a DVC remote (the default one when `name` is None), a relative path made absolute."""
    if name is None:
        name = dvc("remote", "default").strip()
        if not name:
            raise SystemExit("error: --dvc-remote: this repository has no default DVC remote; name one")
    remotes = [line.split()[0] for line in dvc("remote", "list").splitlines() if line.strip()]
    if name not in remotes:
        known = ", ".join(remotes) or "(none)"
        raise SystemExit(f"error: --dvc-remote={name!r} is not a DVC remote here; use one of: {known}")
    url = dvc("config", f"remote.{name}.url").strip()
    # DVC reads a relative path in its config from .dvc/
    return url if "://" in url else str((Path(".dvc") / Path(url).expanduser()).resolve())


@dataclass
class RayEngine:
    """Runs each round's experiments as Ray tasks; `sync` pulls the experiments pushed so far."""

    address: str | None
    cpus: float
    gpus: float
    retries: int
    workdir: Path
    checkpoints: Path | None
    git_remote: str
    dvc_remote: str | None
    study: str = ""
    records: list | None = None

    def start(self, study: str) -> None:
        import ray

        self.study = study
        self.records = []
        remotes = git("remote").split()
        if self.git_remote not in remotes:
            raise SystemExit(
                f"error: --git-remote={self.git_remote!r} is not a git remote here; use one of: "
                f"{', '.join(remotes) or '(none: git remote add origin <url>)'}"
            )
        self.git_url = git("remote", "get-url", self.git_remote)
        if "://" not in self.git_url and Path(self.git_url).exists():
            self.git_url = str(Path(self.git_url).resolve())
        self.commit = git("rev-parse", "HEAD")
        git("fetch", "-q", self.git_remote)
        if not git("branch", "-r", "--contains", self.commit):
            raise SystemExit(
                f"error: the study's commit {self.commit[:8]} is not on git remote {self.git_remote}; the "
                f"tasks clone it from there: git push {self.git_remote} HEAD"
            )
        if git("status", "--porcelain", "--untracked-files=no"):
            print(f"study {study}: warning: uncommitted changes stay here; the tasks run {self.commit[:8]}")
        self.dvc_url = dvc_remote_url(self.dvc_remote)
        self.user = _git_config("user.name", "study"), _git_config("user.email", "study@localhost")
        self.workdir = self.workdir / f"{study}-{self.commit[:8]}"
        # Ray's notice that it will stop hiding GPUs from tasks with num_gpus=0: the study wants them hidden
        warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
        ray.init(address=self.address, log_to_driver=True, configure_logging=False)
        slots = ray.cluster_resources()
        print(
            f"study {study}: Ray cluster with {slots.get('CPU', 0):g} CPUs, {slots.get('GPU', 0):g} GPUs; "
            f"each experiment asks for {self.cpus:g} CPUs, {self.gpus:g} GPUs; task folders under "
            f"{self.workdir} on each node"
        )
        cpus, gpus = slots.get("CPU", 0), slots.get("GPU", 0)
        if cpus < self.cpus or gpus < self.gpus:
            raise SystemExit(
                f"error: --cpus-per-experiment={self.cpus:g} / --gpus-per-experiment={self.gpus:g}: the "
                f"cluster has {cpus:g} CPUs and {gpus:g} GPUs; ask for at most that"
            )
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        self.task = ray.remote(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries, retry_exceptions=False
        )(run_experiment)

    def sync(self) -> None:
        """Fetch the study's experiments from the git remote (and their outputs from the DVC remote)."""
        dvc("exp", "pull", self.git_url)

    def run(self, todo: dict[str, dict], lock: str | None = None) -> dict[str, str]:
        """Run experiments {name: params}; returns {name: why} of those that failed for good.

        `lock` (the first experiment's dvc.lock, stages.study.workspace_lock) is not used: a task runs
        `dvc exp run --pull`, which takes a stage that matches the lock as done once it has pulled its
        cached outputs, and leaves its `cache: false` metrics missing. Tasks start from the commit's lock,
        so the starting point is restored from the run cache, or remade where the commit's lock names
        outputs the DVC remote lacks (docs/cluster.md)."""
        import ray

        pending = {}
        for experiment, params in todo.items():
            spec = {
                "experiment": experiment,
                "params": params,
                "git_url": self.git_url,
                "commit": self.commit,
                "dvc_url": self.dvc_url,
                "workdir": str(self.workdir),
                "checkpoints": str(self.checkpoints) if self.checkpoints else None,
                "threads": max(1, int(self.cpus)),
                "git_user": self.user[0],
                "git_email": self.user[1],
            }
            ref = self.task.options(name=experiment).remote(spec)
            pending[ref] = experiment
            log = self.workdir / experiment / "log.txt"
            print(f"study {self.study}: {experiment} dispatched (log: {log})")
        failed = {}
        total, done = len(pending), 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            experiment = pending.pop(ready[0])
            done += 1
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayError as error:  # the worker died more often than --retries allows
                log = self.workdir / experiment / "log.txt"
                tail = (
                    log.read_text().splitlines()[-LOG_TAIL:] if log.is_file() else [f"(its node has {log})"]
                )
                why = f"{type(error).__name__} after {self.retries} retries"
                failed[experiment] = why + "\n" + "\n".join(tail)
                print(f"study {self.study}: {experiment} lost ({done}/{total}): {type(error).__name__}")
                continue
            self.records.append(result)
            took = result["end"] - result["start"]
            if result["ok"]:
                retried = f", attempt {result['attempt']}" if result["attempt"] > 1 else ""
                print(f"study {self.study}: {experiment} pushed ({done}/{total}) in {took:.0f} s on "
                      f"{result['node']}{retried}")  # fmt: skip
            else:
                failed[experiment] = f"failed; log {result['log']}:\n" + "\n".join(result["log_tail"])
                print(f"study {self.study}: {experiment} FAILED ({done}/{total}) after {took:.0f} s")
        return failed

    def stop(self) -> None:
        import ray

        if self.records:  # merged by experiment, so a resumed study keeps the earlier runs' records
            path = Path("study") / self.study / "tasks.json"
            kept = json.loads(path.read_text()) if path.is_file() else []
            ran = {record["experiment"] for record in self.records}
            records = [r for r in kept if r["experiment"] not in ran] + self.records
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(sorted(records, key=lambda r: r["start"]), indent=1) + "\n")
        ray.shutdown()


def _git_config(key: str, default: str) -> str:
    result = subprocess.run(["git", "config", key], capture_output=True, text=True)
    return result.stdout.strip() or default

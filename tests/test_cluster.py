"""The study on a real Ray cluster started here: 2 seeds x 2 arms as Ray tasks, shared through a bare git
repository (the git remote) and a local directory (the DVC remote), against the same study on the local queue.

Marked `ray` (excluded from the default run, see pyproject.toml): `.ci/run` runs it with REQUIRE_RAY=1, where
a missing Ray fails instead of skipping. The cluster has 2 CPUs, is started by the test with its own port and
is stopped at the end whatever happens; every phase runs under a time limit. It is asked for 127.0.0.1, but
Ray 2.52 registers the node under the machine's own address and its GCS listens on every interface: run it on
a machine whose ports are not reachable from outside (a CI runner, a VM).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import make_repo, require, run
from test_study import MICRO_STUDY, STUDY

require("ray", "REQUIRE_RAY", "Ray", "pip install -e '.[cluster]'")

pytestmark = [pytest.mark.slow, pytest.mark.ray]

CLUSTER_CPUS = 2
CPUS_PER_EXPERIMENT = 1
PHASE_LIMIT = 900  # s, one micro study (about 4 min on a quiet 2-core machine); the test stays under 3
# A checkpoint every step, so the task killed mid-training has one to resume from (not a DVC dependency).
PARAMS = {**MICRO_STUDY, "checkpoint.every": 1}
ARMS = ["--seeds", "2", "--arms", "sft_all,grpo_viter3", "--name", "micro"]
MADE = {f"micro-s{seed}-{arm}" for seed in (0, 1) for arm in ("sft_all", "grpo_viter3")}
KILLED = "micro-s1-sft_all"  # round 2: it restores seed 0's starting point from the DVC remote, then trains


def environment(repo: Path) -> dict:
    # One torch thread in both engines: float sums, and so the samples, depend on the thread count.
    return {
        **os.environ,
        "PYTHONPATH": str(repo),
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "OMP_NUM_THREADS": "1",
    }


def study(args: list[str], repo: Path) -> subprocess.CompletedProcess:
    """The study command, under the phase's time limit; past it, its whole process group (queue workers
    included) is killed."""
    process = subprocess.Popen(
        [*STUDY, *args], cwd=repo, env=environment(repo), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=PHASE_LIMIT)
    except subprocess.TimeoutExpired:
        # DVC's queue workers are daemons, outside the process group
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, capture_output=True, timeout=120)
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, f"{args} failed:\n{stdout}\n{stderr}"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path):
    """A one-node Ray cluster of CLUSTER_CPUS CPUs, stopped (its process group killed) at teardown."""
    port = free_port()
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
         "--num-cpus", str(CLUSTER_CPUS), "--num-gpus", "0", "--include-dashboard=false",
         "--disable-usage-stats"],
        stdout=(tmp_path / "ray-head.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while subprocess.run(["ray", "status", "--address", address], capture_output=True).returncode != 0:
            assert head.poll() is None and time.time() < deadline, (tmp_path / "ray-head.log").read_text()
            time.sleep(2)
        yield address
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the node's processes on SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # whatever of the cluster is left


def max_concurrency(records: list[dict]) -> int:
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def kill_when_training_checkpoints(task_dir: Path, coordinator: subprocess.Popen) -> int:
    """SIGKILL the Ray worker running the task once its first Trainer checkpoint is complete; its pid."""
    deadline = time.time() + PHASE_LIMIT
    while time.time() < deadline and coordinator.poll() is None:
        saved = list(task_dir.glob("checkpoints/*/*/checkpoint-*/trainer_state.json"))
        if saved and (task_dir / "attempt-1.json").is_file():
            pid = json.loads((task_dir / "attempt-1.json").read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of {task_dir.name} appeared: {coordinator.communicate()}")


def test_a_micro_study_on_a_ray_cluster_equals_the_local_queue(tmp_path, ray_cluster):
    # The local queue: the reference table and wall time.
    local = make_repo(tmp_path / "local" / "repo", PARAMS)
    started = time.time()
    study(["run", *ARMS, "--jobs", str(CLUSTER_CPUS)], local)
    local_wall = time.time() - started
    local_claims = json.loads((local / "study" / "micro" / "claims.json").read_text())

    # The Ray study: its commit on a bare git remote; the DVC remote is the project's default, ../dvc-storage.
    repo = make_repo(tmp_path / "ray" / "repo", PARAMS)
    remote = tmp_path / "ray" / "remote.git"
    run(["git", "init", "-q", "--bare", str(remote)], tmp_path)
    run(["git", "remote", "add", "origin", str(remote)], repo)
    run(["git", "push", "-q", "origin", "HEAD"], repo)
    commit = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    workdir = tmp_path / "work"
    ray_args = ["run", "--engine", "ray", "--address", ray_cluster, "--workdir", str(workdir),
                "--cpus-per-experiment", str(CPUS_PER_EXPERIMENT), *ARMS]  # fmt: skip
    started = time.time()
    coordinator = subprocess.Popen(
        [*STUDY, *ray_args], cwd=repo, env=environment(repo), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        task_dir = workdir / f"micro-{commit[:8]}" / KILLED
        killed_pid = kill_when_training_checkpoints(task_dir, coordinator)
        stdout, stderr = coordinator.communicate(timeout=PHASE_LIMIT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(coordinator.pid, signal.SIGKILL)
    ray_wall = time.time() - started
    assert coordinator.returncode == 0, f"{stdout}\n{stderr}"
    print(f"micro study, 2 seeds x 2 arms: local queue (--jobs 2) {local_wall:.0f} s, Ray {ray_wall:.0f} s")

    # Every experiment reached the git remote; the claims equal the local queue's, row for row.
    refs = run(["git", "ls-remote", str(remote), "refs/exps/*"], tmp_path).stdout.split()
    assert {ref.rsplit("/", 1)[-1] for ref in refs if ref.startswith("refs/exps/")} == MADE, refs
    claims = json.loads((repo / "study" / "micro" / "claims.json").read_text())
    assert claims["experiments"] == local_claims["experiments"] == sorted(MADE)
    assert claims["claims"] == local_claims["claims"]

    # The killed task was retried by Ray on a fresh clone and resumed training from the dead attempt's
    # checkpoint; the worker it ran in is gone.
    attempts = [json.loads(p.read_text()) for p in sorted(task_dir.glob("attempt-*.json"))]
    assert [a["attempt"] for a in attempts] == [1, 2] and attempts[1]["pid"] != killed_pid
    log = (task_dir / "log.txt").read_text()
    retry = log.split(f"=== {KILLED}: attempt 2")[1]
    assert "resuming from checkpoints/" in retry, retry
    assert f"{KILLED} pushed (2/2)" not in stdout  # round 2 holds one experiment: (1/1)
    assert "attempt 2" in next(line for line in stdout.splitlines() if f"{KILLED} pushed" in line)

    # The resource requests held: never more experiments at once than CPUs / CPUs per experiment.
    records = json.loads((repo / "study" / "micro" / "tasks.json").read_text())
    assert {r["experiment"] for r in records} == MADE and all(r["ok"] for r in records)
    assert 1 <= max_concurrency(records) <= CLUSTER_CPUS // CPUS_PER_EXPERIMENT
    (tmp_path / "wall_times.json").write_text(json.dumps({"local": local_wall, "ray": ray_wall}))

    # A new coordinator, in a fresh clone of the git remote: every experiment is pulled, nothing reruns,
    # and the table is the same.
    fresh = tmp_path / "ray" / "coordinator"
    run(["git", "clone", "-q", str(remote), str(fresh)], tmp_path)
    again = study(ray_args, fresh)
    assert again.stdout.count("already made; kept") == 4 and "0 experiments queued and run" in again.stdout
    assert "dispatched" not in again.stdout
    assert json.loads((fresh / "study" / "micro" / "claims.json").read_text())["claims"] == claims["claims"]

    # An experiment that fails for good (a bad param: generate stops) is not retried, is reported by name with
    # its log's tail, and the study goes on to its next round before exiting non-zero without a table.
    broken_args = [*ray_args[: ray_args.index("--seeds")], "--seeds", "1", "--arms", "sft_all,sft_medium",
                   "--name", "broken", "--set", "generate.gp.num_cards=9"]  # fmt: skip
    broken = subprocess.run(
        [*STUDY, *broken_args], cwd=fresh, env=environment(fresh), capture_output=True, text=True,
        timeout=PHASE_LIMIT,
    )  # fmt: skip
    assert broken.returncode != 0, broken.stdout
    assert "broken-s0-sft_all FAILED" in broken.stdout and "broken-s0-sft_medium dispatched" in broken.stdout
    assert "broken-s0-sft_all failed; log" in broken.stderr and "num_cards" in broken.stderr, broken.stderr
    assert "error: 2 experiments failed: broken-s0-sft_all, broken-s0-sft_medium" in broken.stderr
    assert not (fresh / "study" / "broken" / "claims.json").exists()
    assert len(list(workdir.glob("broken-*/broken-s0-sft_all/attempt-*.json"))) == 1

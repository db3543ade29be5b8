"""The study's local queue starting DVC's queue again when its worker exits with experiments still queued.

The gp_l study lost its last five experiments that way: kombu's filesystem broker handed the worker a
message read while it was written, the worker stopped after its running experiment, and `dvc exp run
--run-all` went on waiting for the rest. Here a real one-stage DVC repository has its worker stopped
(SIGTERM) during the first of three experiments; with one start only, none of the three is made.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from conftest import run

from stages.experiments import local as study

pytestmark = pytest.mark.slow

STAGE = """stages:
  work:
    cmd: python work.py
    deps: [work.py]
    params: [x]
    outs: [out.txt]
"""
WORK = """import time, yaml
time.sleep(4)  # long enough for the worker to be stopped inside it
open("out.txt", "w").write(str(yaml.safe_load(open("params.yaml"))["x"]))
"""


def test_dead_queue_worker_is_replaced(tmp_path, monkeypatch, capsys):
    repo = tmp_path.resolve()
    (repo / "dvc.yaml").write_text(STAGE)
    (repo / "work.py").write_text(WORK)
    (repo / "params.yaml").write_text("x: 0\n")
    (repo / ".gitignore").write_text("/out.txt\n")
    for args in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                 ["git", "config", "user.name", "t"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                 ["git", "commit", "-qm", "init"]):  # fmt: skip
        run(args, repo)
    monkeypatch.chdir(repo)
    monkeypatch.setattr(study, "QUEUE_CHECK_S", 1)

    stopped = []

    def stop_first_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pids = study.queue_worker_pids()  # of the current directory, the repository
            if pids:
                pid = pids[0]
                time.sleep(1.5)  # inside the first experiment's 4 s stage
                os.kill(pid, signal.SIGTERM)
                stopped.append(pid)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=stop_first_worker)
    killer.start()
    queue = study.LocalQueue(jobs=1)
    queue.start("t")
    todo = {f"t-{x}": {"x": x} for x in (1, 2, 3)}
    assert queue.run(todo) == {}
    killer.join()

    assert stopped, "no queue worker was seen"
    assert "experiments not run (start 1 of 3); queueing them again" in capsys.readouterr().err
    made = study.experiments()
    assert set(todo) <= set(made)
    for name, params in todo.items():  # each experiment ran with its own params
        out = run(["git", "show", f"{made[name]}:params.yaml"], repo).stdout
        assert f"x: {params['x']}" in out

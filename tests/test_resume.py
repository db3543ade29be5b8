"""Checkpoint resume: a training stage killed mid-run resumes and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import copy_repo, run, set_params
from test_sft import weights

from stages.training.checkpoints import Checkpoints

# A checkpoint every 2 steps; a run is killed once the first is complete. The steps after it leave a wide
# margin: on a fast machine, a run of 6 micro steps ended before the test could kill it.
STEPS = {"sft": 24, "grpo": 12}
CURVE_STEPS = {"sft": [0, 8, 16, 24], "grpo": [0, 8, 12]}  # every curves.eval_every steps, and the last
MICRO_RUNS = {
    "checkpoint.every": 2,
    "sft.steps": STEPS["sft"],
    "sft.batch_size": 8,
    "grpo.steps": STEPS["grpo"],
    "grpo.prompts_per_step": 2,
    "grpo.num_generations": 4,
    "rollout.max_new_tokens": 16,
    "curves.eval_every": 8,
}
TIMINGS = ("wall_s", "train_s", "curves_s", "cost_s")


def test_last_skips_a_checkpoint_cut_short(tmp_path):
    saves = Checkpoints(tmp_path / "checkpoints" / "grpo" / "0123abcd", every=2)
    assert saves.last() is None
    for step in (2, 4, 6):
        (saves.directory / f"checkpoint-{step}").mkdir(parents=True)
    for step in (2, 4):  # checkpoint-6 was being written when the run died: no trainer_state.json yet
        (saves.directory / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert saves.last() == str(saves.directory / "checkpoint-4")
    saves.remove()
    assert tmp_path.is_dir() and not any(tmp_path.iterdir())  # checkpoints/grpo/ went too


def kill_after_first_checkpoint(repo, stage: str) -> None:
    """Start `dvc repro <stage>`, wait for its first complete checkpoint, then kill DVC and the stage."""
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": str(repo)}
    process = subprocess.Popen(
        ["dvc", "repro", stage], cwd=repo, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list((repo / "checkpoints" / stage).glob("*/checkpoint-*/trainer_state.json")):
        assert process.poll() is None, f"dvc repro {stage} ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def outcome(repo, stage: str) -> tuple[dict, dict]:
    metrics = json.loads((repo / "metrics" / f"{stage}.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMINGS}, weights(repo / "models" / stage)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_a_killed_stage_resumes_and_matches_an_uninterrupted_run(micro_split, tmp_path, stage):
    whole = copy_repo(micro_split, tmp_path / "whole")
    set_params(whole, MICRO_RUNS)
    run(["dvc", "repro", stage], whole)
    assert not (whole / "checkpoints").exists()  # a finished run deletes its checkpoints
    expected_metrics, expected_weights = outcome(whole, stage)

    killed = copy_repo(micro_split, tmp_path / "killed")
    set_params(killed, MICRO_RUNS)
    kill_after_first_checkpoint(killed, stage)
    assert not (killed / "models" / stage).exists() and not (killed / "metrics" / f"{stage}.json").exists()

    if stage == "grpo":  # other params never resume from these checkpoints, nor delete them
        set_params(killed, {"grpo.lr": 1e-3})
        other = run(["dvc", "repro", stage], killed)
        assert "resuming from" not in other.stdout
        assert list((killed / "checkpoints" / stage).glob("*/checkpoint-*"))
        set_params(killed, {"grpo.lr": 3e-4})

    state = next((killed / "checkpoints" / stage).glob("*/checkpoint-*/trainer_state.json"))
    before_s = [log["wall_s"] for log in json.loads(state.read_text())["log_history"] if "wall_s" in log][-1]
    resumed = run(["dvc", "repro", stage], killed)
    assert "resuming from" in resumed.stdout, resumed.stdout
    # the resumed run's wall time adds the killed process's seconds up to its checkpoint
    assert json.loads((killed / "metrics" / f"{stage}.json").read_text())["wall_s"] > before_s
    assert not (killed / "checkpoints").exists()
    metrics, trained = outcome(killed, stage)
    assert metrics == expected_metrics
    assert trained.keys() == expected_weights.keys()
    assert all(trained[k].equal(expected_weights[k]) for k in trained)
    curve = (killed / "metrics" / f"{stage}_live" / "plots" / "metrics" / "loss.tsv").read_text()
    expected_curve = (whole / "metrics" / f"{stage}_live" / "plots" / "metrics" / "loss.tsv").read_text()
    assert curve == expected_curve and len(curve.splitlines()) == 1 + STEPS[stage]
    scaling = f"metrics/{stage}_live/plots/custom/success_vs_flops.json"
    assert (killed / scaling).read_text() == (whole / scaling).read_text()
    assert [p["step"] for p in json.loads((killed / scaling).read_text())] == CURVE_STEPS[stage]
    assert run(["dvc", "status", stage], killed).stdout.strip().endswith("up to date.")

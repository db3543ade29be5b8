"""Scaling curves: success of the model under training against cumulative post-training FLOPs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from conftest import copy_repo, set_params, stage
from test_sft import weights

from stages.training.callbacks import curve_points, curve_prompt_rows


def test_points_carry_the_flops_spent_up_to_their_step():
    history = [
        {"step": 0, "curve/id": 0.25, "curve/ood_rule": 0.5},
        {"step": 1, "loss": 1.0, "flops/total": 100.0, "flops/train": 60.0, "flops/generation": 40.0},
        {"step": 2, "loss": 0.9, "flops/total": 210.0},
        {"step": 2, "curve/id": 0.5, "curve/ood_rule": 0.25},  # logged before or after its step's log
        {"step": 3, "loss": 0.8, "flops/total": 330.0},
        {"step": 3, "train_loss": 0.9, "train_runtime": 1.0},  # the run summary
    ]
    assert curve_points(history) == [
        {"step": 0, "flops": 0, "id": 0.25, "ood_rule": 0.5},
        {"step": 2, "flops": 210, "id": 0.5, "ood_rule": 0.25},
    ]


def test_every_prompt_of_every_point_is_kept_with_its_unit():
    history = [
        {"step": 0, "curve/id": 0.5, "curve_prompts/id": [1.0, 0.0]},
        {"step": 1, "loss": 1.0, "flops/total": 100.0},
        {"step": 1, "curve/id": 0.75, "curve_prompts/id": [0.5, 1.0]},
    ]
    steps = [{"id": f"eval_id-r00007-s0{i}", "task": json.dumps({"route": "eval_id-r00007"})} for i in (0, 1)]
    rows = curve_prompt_rows(history, {"id": steps})
    assert rows[2] == {
        "step": 1,
        "flops": 100,
        "set": "id",
        "id": "eval_id-r00007-s00",
        "unit": "eval_id-r00007",
        "success": 0.5,
    }
    assert [r["success"] for r in rows] == [1.0, 0.0, 0.5, 1.0]
    # the points' means stay what they were: per-prompt lists are not curve points
    assert curve_points(history)[1] == {"step": 1, "flops": 100, "id": 0.75}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sft", "grpo"])
def test_training_stages_plot_success_against_flops(micro_split, tmp_path, name):
    repo = copy_repo(micro_split, tmp_path / "repo")
    steps = {"sft.steps": 5, "sft.batch_size": 8, "grpo.steps": 5, "grpo.prompts_per_step": 2}
    set_params(
        repo, {**steps, "grpo.num_generations": 4, "rollout.max_new_tokens": 16, "curves.eval_every": 2}
    )
    stage(name, repo)
    trained = weights(repo / "models" / name)
    points = json.loads(
        (repo / "metrics" / f"{name}_live" / "plots" / "custom" / "success_vs_flops.json").read_text()
    )
    assert [p["step"] for p in points] == [0, 2, 4, 5]  # the starting model, every 2 steps, the end
    flops = [p["flops"] for p in points]
    assert flops[0] == 0 and flops == sorted(set(flops))
    assert flops[-1] == json.loads((repo / "metrics" / f"{name}.json").read_text())["flops"]
    assert all(0 <= p[key] <= 1 for p in points for key in ("id", "ood_rule"))
    per_prompt = pd.read_csv(repo / "metrics" / f"{name}_live" / "curve_per_prompt.csv")
    means = per_prompt.groupby(["step", "set"])["success"].mean().unstack()
    for point in points:  # every point's mean success is the mean of its prompts'
        assert means.loc[point["step"], "ood_rule"] == pytest.approx(point["ood_rule"], abs=1e-3)
    assert set(per_prompt["flops"]) == set(flops)

    if name == "grpo":  # a FLOPs budget reached at step 2 stops the run there, with a last point
        set_params(repo, {"grpo.max_flops": flops[1]})
        stage(name, repo)
        budgeted = json.loads(
            (repo / "metrics" / "grpo_live" / "plots" / "custom" / "success_vs_flops.json").read_text()
        )
        assert budgeted == points[:2]
        assert json.loads((repo / "metrics" / "grpo.json").read_text())["steps"] == 2
        set_params(repo, {"grpo.max_flops": None})

    set_params(repo, {"curves.eval_every": 0})  # off: no evaluation, an empty curve file all the same
    stage(name, repo)
    assert (
        json.loads(
            (repo / "metrics" / f"{name}_live" / "plots" / "custom" / "success_vs_flops.json").read_text()
        )
        == []
    )
    # the evaluations run under their own random streams: without them training reaches the same weights
    after = weights(repo / "models" / name)
    assert all(torch.equal(trained[key], after[key]) for key in trained)

"""The whole pipeline through DVC on micro params: `dvc repro`, then an experiment on one SFT subset."""

from __future__ import annotations

import json

import pytest
from conftest import make_repo, run

pytestmark = pytest.mark.slow

# virl_l, because a micro base model already gets some of its steps right (on gp_l it solves none, so
# the easy bucket would be empty); greedy scoring (temperature 0) makes every prompt easy or hard.
QUICK = {
    "env": "virl_l",
    "base.steps": 60,  # MICRO's 30 leave every short V-IRL route hard
    "score.temperature": 0.0,
    "rollout.max_new_tokens": 16,
    "evaluate.k": 1,
    "evaluate.samples": 2,
    "sft.steps": 10,
    "sft.batch_size": 16,
    "grpo.steps": 3,
    "grpo.prompts_per_step": 4,
    "grpo.num_generations": 4,
}


def test_repro_then_an_experiment_changes_sft_metrics_only(tmp_path):
    repo = make_repo(tmp_path / "repo", QUICK)
    run(["dvc", "repro"], repo)
    for model in ("base", "sft", "grpo"):
        metrics = json.loads((repo / "metrics" / "eval" / f"{model}.json").read_text())
        assert {"step_accuracy", "route_success"} <= metrics["ood_rule"].keys()
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert set(summary["models"]) == {"base", "sft", "grpo"}
    assert summary["models"]["sft"]["flops"] > 0 and summary["models"]["grpo"]["flops"] > 0
    markdown = (repo / "metrics" / "summary.md").read_text()
    assert all(f"| {model} |" in markdown for model in ("base", "sft", "grpo"))
    run(["dvc", "plots", "show"], repo)
    assert (repo / "dvc_plots" / "index.html").is_file()

    split = json.loads((repo / "metrics" / "split.json").read_text())
    total, easy = sum(split[f"{b}_count"] for b in ("easy", "medium", "hard")), split["easy_count"]
    assert 0 < easy < total
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "dvc repro"], repo)
    run(["dvc", "exp", "run", "-S", "subset=easy"], repo)
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], repo).stdout)
    # SFT trained on other prompts (other tokens, so other FLOPs); GRPO and the base did not rerun, so their
    # metrics files, and their numbers in the headline, are unchanged.
    assert diff["metrics/sft.json"]["train_prompts"] == {"old": total, "new": easy, "diff": easy - total}
    for unchanged in ("metrics/grpo.json", "metrics/eval/grpo.json", "metrics/eval/base.json"):
        assert unchanged not in diff, diff
    changed = set(diff["metrics/headline.json"])
    assert "flops.sft" in changed, changed
    assert all(key.split(".")[1] == "sft" for key in changed), changed
    params = json.loads(run(["dvc", "params", "diff", "--json"], repo).stdout)
    assert params["params.yaml"]["subset"] == {"old": "all", "new": "easy"}

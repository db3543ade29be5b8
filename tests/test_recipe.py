"""Recipes for real checkpoints (configs/*.yaml through stages/recipe.py): checked against params.yaml,
turned into `dvc exp run -S` arguments, and a micro version of the text recipe run on CPU by `dvc exp run`
on the tiny Qwen2 checkpoint of tests/test_real_checkpoint.py."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO, assert_one_line_error, make_repo, run
from test_real_checkpoint import build_qwen_checkpoint

RECIPES = sorted((REPO / "configs").glob("*.yaml"))


def recipe(args: list[str], cwd=REPO, check=True):
    return run([sys.executable, "-m", "stages.recipe", *args], cwd, check=check)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_checks_against_params_yaml(path):
    printed = recipe([str(path), "-S", "model.path=/models/x", "-S", "sft.lr=2e-5", "--print"]).stdout
    assert printed.startswith("dvc exp run -S ") and "train.activation_checkpointing=true" in printed
    assert (
        "sft.lr=2e-5" in printed and "sft.lr=1e-05" not in printed
    )  # the caller's value replaces the recipe's


def test_a_bad_recipe_stops_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  lrr: 1.0e-5\n")
    assert_one_line_error(recipe([str(bad), "-S", "model.path=/m"], check=False), "sft.lrr")
    bad.write_text("sft:\n  lr: fast\n")
    assert_one_line_error(recipe([str(bad), "-S", "model.path=/m"], check=False), "sft.lr='fast'", "number")
    assert_one_line_error(recipe([str(RECIPES[0])], check=False), "model.path")


@pytest.mark.slow
def test_the_text_recipe_runs_micro_under_dvc_exp_run(tmp_path):
    checkpoint = build_qwen_checkpoint(
        tmp_path / "checkpoint", ['{"cards": ["5", "J"], "formula": "5+10=15"}']
    )
    repo = make_repo(tmp_path / "repo")
    micro = {
        "model.path": str(checkpoint),
        **{f"generate.gp.sizes.{split}": 2 for split in ("eval_id", "eval_ood_rule", "eval_ood_visual")},
        "generate.gp.sizes.train": 8,
        "generate.gp.sizes.corpus": 4,
        "generate.gp.num_cards": "[2]",
        "rollout.max_new_tokens": 8,
        "score.k": 2,
        "sft.steps": 2,
        "sft.batch_size": 8,  # 2 accumulated micro-batches of train.micro_batch_size 4
        "train.micro_batch_size": 4,
        "grpo.steps": 1,
        "grpo.prompts_per_step": 2,
        "grpo.num_generations": 2,
        "evaluate.k": 1,
        "evaluate.samples": 1,
        "curves.eval_every": 0,
    }
    arguments = [item for key, value in micro.items() for item in ("-S", f"{key}={value}")]
    recipe([str(REPO / "configs" / "qwen2.5-1.5b-instruct.yaml"), *arguments], cwd=repo)
    for name in ("sft", "grpo"):
        metrics = json.loads((repo / "metrics" / f"{name}.json").read_text())
        assert metrics["lora_rank"] == 32 and metrics["steps"] == micro[f"{name}.steps"]
        args = (repo / "metrics" / f"{name}_live" / "params.yaml").read_text()
        assert "gradient_checkpointing: true" in args and "per_device_train_batch_size: 4" in args
    assert json.loads((repo / "metrics" / "score.json").read_text())["engine"] == "hf"  # auto on a CPU
    shown = run(["dvc", "params", "diff", "--all"], repo).stdout
    assert "sft.lora.enabled" in shown and "train.activation_checkpointing" in shown

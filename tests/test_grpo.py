"""Stage `grpo`: verifier reward, verification iterations, group filtering, LoRA, metrics, bad params."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_one_line_error, copy_repo, set_params, stage
from test_sft import SIZES, weights, write_buckets

from stages.envs import get_env
from stages.training.rewards import env_reward

FAST = {"grpo.steps": 2, "grpo.prompts_per_step": 2, "grpo.num_generations": 4, "rollout.max_new_tokens": 16}


@pytest.fixture
def repo(micro_split, tmp_path):
    repo = copy_repo(micro_split, tmp_path / "repo")
    write_buckets(repo)
    set_params(repo, FAST)
    return repo


def test_reward_is_the_verifiers_and_prefers_the_last_attempt():
    env = get_env("gp_l")
    records = env.generate({"train": 4, "eval_id": 0, "eval_ood_rule": 0, "corpus": 0}, {}, 0)["train"]
    reward = env_reward(env)
    tasks = [r["task"] for r in records]
    oracle = [[{"role": "assistant", "content": r["answer"]}] for r in records]
    logged = {}
    rewards = reward(completions=oracle, task=tasks, log_metric=logged.__setitem__)
    assert rewards == [env.verify(r, r["answer"]).reward for r in records] and logged == {"success": 1.0}
    # with verification iterations the completion holds every attempt; `response` is what gets verified
    wrong = reward(completions=oracle, task=tasks, response=["Numbers : 1 ."] * len(records))
    assert all(w < r for w, r in zip(wrong, rewards, strict=True))


def trainer_for(repo, tmp_path, trainer_class, **kwargs):
    import datasets
    from trl import GRPOConfig

    from stages.core.storage import read_split
    from stages.inference.models import load_model
    from stages.training.checkpoints import Checkpoints
    from stages.training.data import conversational
    from stages.training.settings import trainer_defaults

    tokenizer, model = load_model(repo / "models" / "base")
    data = read_split(repo / "data" / "generated" / "train.parquet").select(range(8))
    train = datasets.concatenate_datasets(
        [conversational(data).remove_columns("completion"), data.select_columns(["task"])], axis=1
    )
    args = GRPOConfig(
        **trainer_defaults(Checkpoints(tmp_path / "out", every=0), steps=1, batch_size=32, lr=1e-4, seed=0),
        num_generations=4,
        max_completion_length=12,
    )
    kwargs = {"reward_funcs": env_reward(get_env("gp_l"))} | kwargs
    trainer = trainer_class(model=model, args=args, train_dataset=train, processing_class=tokenizer, **kwargs)
    return trainer, data


def length_reward(completion_ids, **kwargs) -> list[float]:
    """A second reward that differs within most groups (the micro model's answers all score the same)."""
    return [float(len(ids)) for ids in completion_ids]


@pytest.mark.slow
@pytest.mark.parametrize("with_length", [False, True])
def test_filter_groups_masks_groups_with_equal_rewards(micro_split, tmp_path, with_length):
    from stages.core.private import group_filter_trainer

    extra = {"reward_funcs": [env_reward(get_env("gp_l")), length_reward]} if with_length else {}
    trainer, data = trainer_for(micro_split, tmp_path, group_filter_trainer(), **extra)
    inputs = [row for row in data.to_list() for _ in range(4)]
    batch = trainer._generate_and_score_completions(inputs)
    rewards = trainer._rewards.sum(dim=1).view(-1, 4)
    equal = (rewards == rewards[:, :1]).all(dim=1).repeat_interleave(4)
    kept = batch["tool_mask"].bool().any(dim=1)
    assert torch.equal(kept, ~equal) and (kept.any() or not with_length)
    assert batch["num_items_in_batch"] == (batch["completion_mask"] * batch["tool_mask"]).sum()


@pytest.mark.slow
def test_grpo_trains_on_the_subset_and_writes_metrics(repo):
    set_params(repo, {"grpo.subset": "easy_medium"})
    stage("grpo", repo)
    model = repo / "models" / "grpo"
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
    metrics = json.loads((repo / "metrics" / "grpo.json").read_text())
    assert metrics["train_prompts"] == SIZES["easy"] + SIZES["medium"] and metrics["steps"] == 2
    assert metrics["wall_s"] > 0 and metrics["train_tokens"] > metrics["generated_tokens"] > 0
    n = metrics["parameters"]
    paper = 6 * n * metrics["train_tokens"] + 2 * n * metrics["generated_tokens"]
    assert metrics["flops_paper_formula"] == paper
    parts = metrics["flops_parts"]  # beta 0.04 runs the reference model on every completion
    assert metrics["flops"] == parts["train"] + parts["generation"] + parts["reference"] + parts["scoring"]
    assert parts["train"] > 0 and parts["generation"] > 0 and parts["reference"] > 0
    assert 0 <= metrics["grad_norm_mean"] <= metrics["grad_norm_max"]
    assert metrics["reward_first10"] is not None and metrics["reward_last10"] is not None
    plots = repo / "metrics" / "grpo_live" / "plots" / "metrics"
    for name in ("loss", "grad_norm", "learning_rate", "reward", "reward_std"):
        assert len((plots / f"{name}.tsv").read_text().splitlines()) == 1 + 2


@pytest.mark.slow
def test_viter_filter_groups_and_lora_together(repo):
    set_params(
        repo, {"grpo.viter": 2, "grpo.filter_groups": True, "grpo.lora.enabled": True, "grpo.lora.rank": 4}
    )
    stage("grpo", repo)
    model = repo / "models" / "grpo"
    assert not list(model.glob("adapter*"))
    assert weights(model).keys() == weights(repo / "models" / "base").keys()
    assert json.loads((repo / "metrics" / "grpo.json").read_text())["lora_rank"] == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "sizes", "named"),
    [
        ({"grpo.subset": "everything"}, SIZES, "grpo.subset"),
        ({"grpo.subset": "easy"}, {"easy": 0, "medium": 40, "hard": 8}, "grpo.subset"),
        ({"grpo.lora.rank": 0}, SIZES, "grpo.lora.rank"),
        ({"grpo.num_generations": 1}, SIZES, "grpo.num_generations"),
    ],
)
def test_bad_input_stops_with_one_line_and_writes_nothing(repo, overrides, sizes, named):
    write_buckets(repo, sizes)
    set_params(repo, overrides)
    result = stage("grpo", repo, check=False)
    assert_one_line_error(result, named)
    assert not (repo / "models" / "grpo").exists() and not (repo / "metrics" / "grpo.json").exists()

"""Stage `grpo`: verifier reward, verification iterations, group filtering, LoRA, metrics, bad params."""

from __future__ import annotations

import csv
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


def by_step(reward):
    """The verifier's reward plus the number of the batch it scores (0, 1, ...): the micro model's answers
    score the same at every step, and the run's first and last rewards must be told apart."""
    batches = []

    def step_reward(completions, task, **kwargs) -> list[float]:
        batches.append(len(completions))
        return [r + len(batches) - 1 for r in reward(completions=completions, task=task, **kwargs)]

    step_reward.__name__ = reward.__name__
    return step_reward


def logged(path) -> list[float]:
    """A dvclive metric's values, one per step."""
    with path.open() as f:
        return [float(row[path.stem]) for row in csv.DictReader(f, delimiter="\t")]


@pytest.mark.slow
def test_grpo_trains_on_the_subset_and_writes_metrics(repo, monkeypatch):
    """The grpo stage, in this process, its reward shifted by one at each step."""
    import stages.grpo

    set_params(repo, {"grpo.subset": "easy_medium"})
    monkeypatch.setattr(stages.grpo, "env_reward", lambda env: by_step(env_reward(env)))
    monkeypatch.chdir(repo)
    stages.grpo.main()
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
    plots = repo / "metrics" / "grpo_live" / "plots" / "metrics"
    for name in ("loss", "grad_norm", "learning_rate", "reward", "reward_std"):
        assert len((plots / f"{name}.tsv").read_text().splitlines()) == 1 + 2
    # the first and last tenth of the logged per-step curves (one step each of two)
    rewards, success = logged(plots / "reward.tsv"), logged(plots / "success.tsv")
    assert rewards[1] > rewards[0]  # by_step: the curve moves, so first and last differ
    for name, curve in (("reward", rewards), ("success", success)):
        ends = metrics[f"{name}_first10"], metrics[f"{name}_last10"]
        assert ends == pytest.approx((curve[0], curve[1]), abs=1e-4), name


def with_signal(reward, group: int):
    """The verifier's reward plus 0, 0.1, 0.2, ... across the first group of every batch: the micro model's
    answers all score the same, so without it every group would be masked and nothing would train."""

    def signal(completions, task, **kwargs) -> list[float]:
        rewards = reward(completions=completions, task=task, **kwargs)
        return [r + (0.1 * i if i < group else 0.0) for i, r in enumerate(rewards)]

    signal.__name__ = reward.__name__
    return signal


@pytest.mark.slow
def test_viter_filter_groups_and_lora_together(repo, monkeypatch):
    """The grpo stage, in this process, with every batch recorded as the group filter hands it to the loss."""
    import stages.grpo
    from stages.core.private import group_filter_trainer
    from stages.envs import FEEDBACK_PREFIX

    group = FAST["grpo.num_generations"]
    set_params(repo, {"grpo.viter": 2, "grpo.filter_groups": True, "grpo.lora.enabled": True,
                      "grpo.lora.rank": 4, "curves.eval_every": 0})  # fmt: skip
    batches = []

    class Recorded(group_filter_trainer()):
        def _generate_and_score_completions(self, inputs):
            batch = super()._generate_and_score_completions(inputs)
            rewards = (self._rewards * self.reward_weights).nansum(dim=1).view(-1, group)
            lengths = batch["completion_mask"].sum(dim=1).tolist()
            ids = [row[:n] for row, n in zip(batch["completion_ids"].tolist(), lengths, strict=True)]
            masks = [row[:n] for row, n in zip(batch["tool_mask"].tolist(), lengths, strict=True)]
            batches.append((rewards, masks, self.processing_class.batch_decode(ids)))
            return batch

    monkeypatch.setattr(stages.grpo, "group_filter_trainer", lambda: Recorded)
    monkeypatch.setattr(stages.grpo, "env_reward", lambda env: with_signal(env_reward(env), group))
    monkeypatch.chdir(repo)
    stages.grpo.main()

    assert len(batches) == FAST["grpo.steps"]
    flat_groups, kept_retries = [], 0
    for rewards, masks, texts in batches:
        informative = (rewards.amax(dim=1) > rewards.amin(dim=1)).repeat_interleave(group).tolist()
        assert informative[:group] == [True] * group
        for keep, mask, text in zip(informative, masks, texts, strict=True):
            assert any(mask) == keep  # a group of equal rewards is masked whole, the others are kept
            # a kept answer that failed was retried: its feedback turn is in the completion, out of the loss
            if keep and FEEDBACK_PREFIX.strip() in text:
                assert mask[0] == 1 and 0 in mask and mask[-1] == 1
                kept_retries += 1
        flat_groups.append(1 - sum(informative) / len(informative))
    assert kept_retries > 0  # retries ran, and trained with their feedback masked
    assert any(flat > 0 for flat in flat_groups)  # groups were masked
    metrics = json.loads((repo / "metrics" / "grpo.json").read_text())
    assert metrics["zero_std_groups_frac"] == pytest.approx(sum(flat_groups) / len(flat_groups), abs=1e-4)
    assert metrics["lora_rank"] == 4
    # LoRA merged into a plain checkpoint, and the informative groups trained it
    model = repo / "models" / "grpo"
    assert not list(model.glob("adapter*"))
    trained, base = weights(model), weights(repo / "models" / "base")
    assert trained.keys() == base.keys()
    assert any(not torch.equal(trained[key], base[key]) for key in base)


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

"""grpo.filter_groups and grpo.viter at the level of the loss: real TRL GRPO batches and steps, tiny model.

The group filter (stages/core/private.py) masks a group whose rewards are all equal through the batch's
`tool_mask`, and verification iterations mask the feedback turns through `env_mask`, which TRL turns into
the same `tool_mask`. Both only work if TRL's loss reads that mask. Here the masked rows are loaded with
advantages and KL terms they would never have in a real run: if they reached the loss, the gradient and the
weights would move.
"""

from __future__ import annotations

import datasets
import pytest
import torch

from stages.core.private import group_filter_trainer
from stages.envs import get_env
from stages.inference.models import build_model, build_tokenizer, load_model
from stages.training.data import conversational
from stages.training.viter import FeedbackRollout, with_record_keys

G = 4  # answers per prompt
PROMPTS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three gp_l records, their prompts as stages/grpo.py builds them, and a tiny random model saved with its
    tokenizer (TRL loads the reference model from the policy's folder)."""
    sizes = {"train": PROMPTS, "eval_id": 0, "eval_ood_rule": 0, "corpus": 40}
    splits = get_env("gp_l").generate(sizes, {}, 0)
    records = datasets.Dataset.from_list(splits["train"])
    prompts = datasets.concatenate_datasets(
        [conversational(records).remove_columns("completion"), records.select_columns(["task"])], axis=1
    )
    corpus = splits["corpus"]
    tokenizer = build_tokenizer([r["prompt"] for r in corpus] + [r["answer"] for r in corpus])
    model = tmp_path_factory.mktemp("model")
    build_model(tokenizer, hidden_size=16, layers=1, heads=2, max_length=256, seed=0).save_pretrained(model)
    tokenizer.save_pretrained(model)
    return records, with_record_keys(prompts, records["id"]), model


def graded(informative: set[str]):
    """A reward that differs within the groups of the `informative` tasks (0, 1, 2, 3) and is 1 elsewhere."""

    def reward(completions, task, **kwargs) -> list[float]:
        return [float(i % G) if t in informative else 1.0 for i, t in enumerate(task)]

    return reward


def make_trainer(trainer_class, data, tmp_path, reward, **kwargs):
    from trl import GRPOConfig

    _, prompts, path = data
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        max_steps=1,
        per_device_train_batch_size=PROMPTS * G,
        num_generations=G,
        max_completion_length=8,
        learning_rate=1e-2,
        lr_scheduler_type="constant",  # a step moves the weights at once (no warmup from 0)
        beta=0.04,  # the KL term, against a reference model, as grpo.beta's default
        disable_dropout=True,
        logging_steps=1,
    )
    tokenizer, model = load_model(path)
    return trainer_class(
        model=model,
        args=args,
        train_dataset=prompts,
        processing_class=tokenizer,
        reward_funcs=reward,
        **kwargs,
    )


def batch_of(trainer, data) -> dict:
    """TRL's own batch step on each prompt G times, as the trainer's sampler hands them over."""
    _, prompts, _ = data
    return trainer._generate_and_score_completions([row for row in prompts.to_list() for _ in range(G)])


def gradient(trainer, batch: dict) -> list[torch.Tensor]:
    trainer.model.eval()  # the loss of a whole batch, as one accumulation window (dropout is off anyway)
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, batch).backward()
    return [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]


def loaded(batch: dict, rows: torch.Tensor) -> dict:
    """The batch with `rows` carrying large advantages and reference log-probs far from the policy's (a KL
    term): what a masked row must not bring into the loss."""
    advantages = batch["advantages"].clone()
    advantages[rows] = torch.linspace(-3.0, 3.0, int(rows.sum()))
    reference = batch["ref_per_token_logps"].clone()
    reference[rows] -= 2.0
    return batch | {"advantages": advantages, "ref_per_token_logps": reference}


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(x, y, rtol=1e-5, atol=1e-9) for x, y in zip(a, b, strict=True))


def test_masked_groups_leave_the_gradient_and_the_normaliser_to_the_informative_one(data, tmp_path):
    records, _, _ = data
    trainer = make_trainer(group_filter_trainer(), data, tmp_path, graded({records[0]["task"]}))
    batch = batch_of(trainer, data)
    kept = batch["tool_mask"].bool().any(dim=1)
    assert kept.tolist() == [True] * G + [False] * (PROMPTS - 1) * G  # the first prompt's group only
    loss_mask = batch["completion_mask"] * batch["tool_mask"]
    assert torch.equal(batch["tool_mask"][kept], torch.ones_like(batch["tool_mask"][kept]))
    assert batch["num_items_in_batch"] == loss_mask.sum() == batch["completion_mask"][kept].sum()

    base = gradient(trainer, batch)
    assert any(g.abs().sum() > 0 for g in base)
    # whatever the masked rows carry, the gradient (so the step) is the one of the informative group alone
    assert same(gradient(trainer, loaded(batch, ~kept)), base)
    rows = {
        key
        for key, value in batch.items()
        if torch.is_tensor(value) and value.dim() and len(value) == len(kept)
    }
    alone = {key: value[kept] if key in rows else value for key, value in batch.items()}
    alone["num_items_in_batch"] = batch["completion_mask"][kept].sum()  # its own tokens: none of the masked
    assert same(gradient(trainer, alone), base)
    # and the probe is sensitive: the same load on an informative row does move it
    assert not same(gradient(trainer, loaded(batch, kept & (torch.arange(len(kept)) == 0))), base)


class LoadedBatches:
    """A trainer whose batches leave its generation step with large advantages on every row (after the group
    filter, where there is one): a row the loss reads moves the weights."""

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        every = torch.ones(len(batch["advantages"]), dtype=torch.bool)
        return loaded(batch, every)


def step_moves_weights(trainer) -> bool:
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    after = list(trainer.model.parameters())
    assert all(torch.isfinite(p).all() for p in after)  # a batch with no token left in the loss is no NaN
    return not all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_a_step_whose_groups_are_all_masked_leaves_the_weights_where_they_were(data, tmp_path):
    from trl import GRPOTrainer

    flat = graded(set())  # every group's rewards are equal: every group is masked
    filtered = type("Filtered", (LoadedBatches, group_filter_trainer()), {})
    trainer = make_trainer(filtered, data, tmp_path, flat)
    assert not step_moves_weights(trainer)
    assert trainer.state.global_step == 1  # the optimizer did step
    unfiltered = type("Unfiltered", (LoadedBatches, GRPOTrainer), {})
    assert step_moves_weights(make_trainer(unfiltered, data, tmp_path / "plain", flat))  # unmasked: they move


def test_filter_groups_with_verification_iterations_keeps_the_feedback_out_of_the_loss(data, tmp_path):
    records, _, _ = data
    outputs = []

    class Recorded(FeedbackRollout):
        def __call__(self, prompts, trainer):
            outputs.append(super().__call__(prompts, trainer))
            return outputs[-1]

    rollout = Recorded.from_records(get_env("gp_l"), records["id"], records["task"], viter=2)
    reward = graded({records[1]["task"]})
    trainer = make_trainer(group_filter_trainer(), data, tmp_path, reward, rollout_func=rollout)
    batch = batch_of(trainer, data)
    env_mask = outputs[-1]["env_mask"]
    kept = batch["tool_mask"].bool().any(dim=1)
    assert kept.tolist() == [False] * G + [True] * G + [False] * G
    assert sum(0 in mask for mask in env_mask) >= G  # the random model fails: its answers were retried
    for row, mask in enumerate(env_mask):
        n = int(batch["completion_mask"][row].sum())
        assert batch["tool_mask"][row][:n].tolist() == (mask[:n] if kept[row] else [0] * n)
    loss_mask = batch["completion_mask"] * batch["tool_mask"]
    assert batch["num_items_in_batch"] == loss_mask.sum()
    assert any(0 in mask for mask, keep in zip(env_mask, kept, strict=True) if keep)  # feedback in a kept row

    base = gradient(trainer, batch)
    # neither the masked groups nor the feedback tokens of the kept one reach the loss
    feedback = (batch["completion_mask"] * (1 - batch["tool_mask"])).bool() & kept.unsqueeze(1)
    assert feedback.any()
    assert same(gradient(trainer, loaded(batch, ~kept)), base)
    reference = batch["ref_per_token_logps"].clone()
    reference[feedback] -= 2.0
    assert same(gradient(trainer, batch | {"ref_per_token_logps": reference}), base)
    reference[loss_mask.bool() & kept.unsqueeze(1)] -= 2.0
    assert not same(gradient(trainer, batch | {"ref_per_token_logps": reference}), base)

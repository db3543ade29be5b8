"""Stage `sft`: difficulty subsets, balancing, LoRA merged into a plain checkpoint, metrics, bad params.

The buckets are rewritten with known sizes (easy 12, medium 28, hard 8 of the 48 micro prompts), so the
tests do not depend on how well the micro base model happens to do.
"""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, copy_repo, set_params, stage
from safetensors import safe_open

from stages.core.storage import read_split, write_split

SIZES = {"easy": 12, "medium": 28, "hard": 8}
FAST = {"sft.steps": 3, "sft.batch_size": 8}


def write_buckets(repo, sizes=SIZES) -> dict[str, list[str]]:
    """Partition the training prompts into buckets of the given sizes, in data order; their ids."""
    train = read_split(repo / "data" / "generated" / "train.parquet").to_list()
    ids, start = {}, 0
    for name, size in sizes.items():
        records = train[start : start + size]
        write_split(records, repo / "data" / "splits" / f"{name}.parquet")
        ids[name], start = [r["id"] for r in records], start + size
    return ids


@pytest.fixture
def repo(micro_split, tmp_path):
    repo = copy_repo(micro_split, tmp_path / "repo")
    write_buckets(repo)
    set_params(repo, FAST)
    return repo


def weights(path) -> dict:
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)


@pytest.mark.parametrize(
    ("subset", "balance", "expected"),
    [
        ("easy", False, {"easy": 12}),
        ("medium", False, {"medium": 28}),
        ("hard", False, {"hard": 8}),
        ("easy_medium", False, {"easy": 12, "medium": 28}),
        ("easy_medium", True, {"easy": 8, "medium": 8}),
        ("all", True, {"easy": 8, "medium": 8, "hard": 8}),
    ],
)
def test_subset_selects_exactly_the_chosen_buckets(repo, monkeypatch, subset, balance, expected):
    from stages.training.data import select_prompts

    buckets = write_buckets(repo)
    monkeypatch.chdir(repo)
    data, sizes = select_prompts(subset, balance, "subset", "sft.balance")
    assert sizes == expected
    # balancing keeps the first n of each bucket, in data order: deterministic
    assert data["id"] == [i for name, n in expected.items() for i in buckets[name][:n]]


def test_all_is_every_training_prompt(repo, monkeypatch):
    from stages.training.data import select_prompts

    buckets = write_buckets(repo)
    monkeypatch.chdir(repo)
    data, sizes = select_prompts("all", False, "subset", "sft.balance")
    assert sizes == {"all": 48}
    assert sorted(data["id"]) == sorted(i for ids in buckets.values() for i in ids)


@pytest.mark.slow
def test_sft_trains_on_the_subset_and_writes_metrics(repo):
    set_params(repo, {"subset": "easy_medium"})
    stage("sft", repo)
    model = repo / "models" / "sft"
    assert (model / "config.json").is_file() and (model / "chat_template.jinja").is_file()
    base = weights(repo / "models" / "base")
    trained = weights(model)
    assert trained.keys() == base.keys()
    assert any(not trained[k].equal(base[k]) for k in base)

    metrics = json.loads((repo / "metrics" / "sft.json").read_text())
    assert metrics["train_prompts"] == 40 and metrics["train_prompts_easy"] == 12
    assert metrics["subset"] == "easy_medium" and metrics["steps"] == 3
    assert metrics["wall_s"] > 0 and metrics["train_tokens"] > 0 and metrics["generated_tokens"] == 0
    assert metrics["flops_paper_formula"] == 6 * metrics["parameters"] * metrics["train_tokens"]
    assert metrics["flops"] == metrics["flops_parts"]["train"] > 0  # SFT only trains
    assert 0 < metrics["grad_norm_mean"] <= metrics["grad_norm_max"]
    plots = repo / "metrics" / "sft_live" / "plots" / "metrics"
    for name in ("loss", "grad_norm", "learning_rate"):  # one row per step, after the header
        assert len((plots / f"{name}.tsv").read_text().splitlines()) == 1 + 3
    assert not (repo / "dvc.yaml").read_text().count("dvclive")  # dvclive left dvc.yaml alone


@pytest.mark.slow
def test_lora_is_merged_into_a_plain_checkpoint(repo):
    set_params(
        repo,
        {
            "subset": "medium",
            "sft.lora.enabled": True,
            "sft.lora.rank": 4,
            "sft.lora.alpha": 8,
            "sft.lr": 0.01,
        },
    )
    stage("sft", repo)
    model = repo / "models" / "sft"
    assert not list(model.glob("adapter*")), "the adapter must be merged, not saved beside the model"
    base, trained = weights(repo / "models" / "base"), weights(model)
    assert trained.keys() == base.keys()  # no lora_A / lora_B tensors
    changed = {k for k in base if not trained[k].equal(base[k])}
    assert changed and all("proj" in k for k in changed)  # only the adapted linear layers moved
    assert json.loads((repo / "metrics" / "sft.json").read_text())["lora_rank"] == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "sizes", "named"),
    [
        ({"subset": "medium_hard"}, SIZES, "subset"),
        ({"subset": "hard"}, {"easy": 20, "medium": 28, "hard": 0}, "subset"),
        ({"sft.balance": True}, {"easy": 20, "medium": 28, "hard": 0}, "sft.balance"),
        ({"sft.lora.rank": 0}, SIZES, "sft.lora.rank"),
    ],
)
def test_bad_input_stops_with_one_line_and_writes_nothing(repo, overrides, sizes, named):
    write_buckets(repo, sizes)
    set_params(repo, overrides)
    result = stage("sft", repo, check=False)
    assert_one_line_error(result, named)
    assert not (repo / "models" / "sft").exists() and not (repo / "metrics" / "sft.json").exists()
    assert not (repo / "metrics" / "sft_live").exists()


def test_micro_batches_with_activation_checkpointing_train_the_same_steps(repo, tmp_path):
    """train.micro_batch_size splits each step's batch into accumulated micro-batches and
    train.activation_checkpointing recomputes the forward: the same model (to float error), the same tokens,
    and more train FLOPs: the recomputed forward (tests/test_compute.py checks the count against torch's)."""
    stage("sft", repo)
    full = json.loads((repo / "metrics" / "sft.json").read_text())
    expected = weights(repo / "models" / "sft")

    micro = copy_repo(repo, tmp_path / "micro")
    set_params(micro, {"train.micro_batch_size": 2, "train.activation_checkpointing": True})
    stage("sft", micro)
    metrics = json.loads((micro / "metrics" / "sft.json").read_text())
    args = (micro / "metrics" / "sft_live" / "params.yaml").read_text()
    assert "per_device_train_batch_size: 2" in args and "gradient_accumulation_steps: 4" in args
    assert metrics["train_tokens"] == full["train_tokens"]
    for key, tensor in weights(micro / "models" / "sft").items():
        assert (tensor - expected[key]).abs().max() < 1e-4, key
    assert metrics["flops_parts"]["train"] > 1.02 * full["flops_parts"]["train"]

    set_params(micro, {"train.micro_batch_size": 3})
    assert_one_line_error(stage("sft", micro, check=False), "train.micro_batch_size=3")

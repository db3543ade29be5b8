"""Stages `base`, `score` and `split` on micro params, through a real `dvc repro split`."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
from conftest import assert_one_line_error, copy_repo, make_repo, set_params, stage

pytestmark = pytest.mark.slow


def contents(repo, folders=("data", "models", "metrics")) -> dict[str, bytes]:
    """Every file under the stages' output folders, by path relative to `repo`, with its bytes."""
    return {
        path.relative_to(repo).as_posix(): path.read_bytes()
        for folder in folders
        for path in sorted((repo / folder).rglob("*"))
        if path.is_file()
    }


def read_scores(repo) -> dict[str, int]:
    with (repo / "data" / "scores.csv").open() as f:
        return {row["id"]: int(row["passes"]) for row in csv.DictReader(f)}


def test_base_is_a_safetensors_checkpoint_with_a_chat_template(micro_split):
    base = micro_split / "models" / "base"
    assert (base / "model.safetensors").is_file() and (base / "config.json").is_file()
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(base).chat_template
    info = json.loads((base / "base_info.json").read_text())
    assert info["last_loss"] < info["first_loss"]  # pretraining learned something


def test_score_writes_pass_counts_and_metrics(micro_split):
    scores = read_scores(micro_split)
    train = pd.read_parquet(micro_split / "data" / "generated" / "train.parquet")
    assert set(scores) == set(train["id"]) and all(0 <= p <= 4 for p in scores.values())
    metrics = json.loads((micro_split / "metrics" / "score.json").read_text())
    histogram = [int(v) for v in metrics["pass_histogram"].values()]
    assert sum(histogram) == len(train) and metrics["k"] == 4
    assert metrics["mean_pass_rate"] == pytest.approx(sum(scores.values()) / (4 * len(train)), abs=1e-4)
    assert metrics["generated_tokens"] > 0 and metrics["tokens_per_s"] > 0
    # prefill and decoding of every sample, at least 2 x N per generated token; the whole stage's seconds
    assert metrics["flops"] > 2 * 30_000 * metrics["generated_tokens"]
    assert metrics["wall_s"] >= metrics["rollout_s"] > 0 and metrics["provenance"]["data_seed"] == 0


def test_every_prompt_lands_in_exactly_one_bucket(micro_split):
    scores = read_scores(micro_split)
    buckets = {
        name: pd.read_parquet(micro_split / "data" / "splits" / f"{name}.parquet")["id"].tolist()
        for name in ("easy", "medium", "hard")
    }
    everything = [i for ids in buckets.values() for i in ids]
    assert sorted(everything) == sorted(scores)
    assert all(scores[i] == 4 for i in buckets["easy"])
    assert all(scores[i] == 0 for i in buckets["hard"])
    assert all(0 < scores[i] < 4 for i in buckets["medium"])
    metrics = json.loads((micro_split / "metrics" / "split.json").read_text())
    for name, ids in buckets.items():
        assert metrics[f"{name}_count"] == len(ids)
        assert metrics[f"{name}_frac"] == pytest.approx(len(ids) / len(scores), abs=1e-4)


def test_split_bounds_move_prompts_between_buckets(micro_split, tmp_path):
    repo = copy_repo(micro_split, tmp_path / "repo")
    set_params(repo, {"split.easy_min": 1, "split.hard_max": 0})  # any success is easy
    stage("split", repo)
    metrics = json.loads((repo / "metrics" / "split.json").read_text())
    assert metrics["medium_count"] == 0
    assert metrics["easy_count"] == sum(p >= 1 for p in read_scores(repo).values())


@pytest.mark.parametrize(
    ("module", "overrides", "named"),
    [
        ("split", {"split.hard_max": 4}, "split.hard_max"),
        ("split", {"split.easy_min": 9}, "split.easy_min"),
        ("score", {"score.k": 0}, "score.k"),
        ("score", {"rollout.engine": "tgi"}, "rollout.engine"),
        ("base", {"model.path": "/nonexistent/model"}, "model.path"),
        ("base", {"model.path": "data"}, "model.path"),
        ("base", {"env": "gp_vl"}, "env"),
    ],
)
def test_bad_params_stop_with_one_line(micro_split, tmp_path, module, overrides, named):
    repo = copy_repo(micro_split, tmp_path / "repo")
    before = contents(repo)
    set_params(repo, overrides)
    result = stage(module, repo, check=False)
    assert_one_line_error(result, named)
    assert contents(repo) == before  # nothing half-written: every output and metrics file byte for byte


def test_steps_and_thresholds_may_differ_per_env(micro_split, tmp_path):
    repo = copy_repo(micro_split, tmp_path / "repo")
    set_params(
        repo,
        {
            "base.steps": {"gp_l": 2, "virl_l": 3},
            "split.easy_min": {"gp_l": 2, "virl_l": None},
            "split.hard_max": {"gp_l": 1, "virl_l": 0},
        },
    )
    stage("base", repo)
    assert json.loads((repo / "models" / "base" / "base_info.json").read_text())["steps"] == 2
    stage("split", repo)
    metrics = json.loads((repo / "metrics" / "split.json").read_text())
    assert (metrics["easy_min"], metrics["hard_max"]) == (2, 1)
    assert metrics["hard_count"] == sum(p <= 1 for p in read_scores(repo).values())
    set_params(repo, {"base.steps": {"virl_l": 3}})
    assert_one_line_error(stage("base", repo, check=False), "base.steps.gp_l")


def test_virl_runs_through_split(tmp_path):
    repo = make_repo(tmp_path / "repo", {"env": "virl_l"})
    from conftest import run

    run(["dvc", "repro", "split"], repo)
    metrics = json.loads((repo / "metrics" / "split.json").read_text())
    assert sum(metrics[f"{b}_count"] for b in ("easy", "medium", "hard")) == len(read_scores(repo))

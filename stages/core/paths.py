"""Every path the stages share, relative to the repository root, where dvc.yaml runs them.

dvc.yaml declares the same paths as deps and outs; the stages, the report and the study read them from here.
"""

from __future__ import annotations

from pathlib import Path

GENERATED = Path("data/generated")  # the generate stage's splits, <split>.parquet
TRAIN = GENERATED / "train.parquet"
CORPUS = GENERATED / "corpus.parquet"
EVAL_SETS = {"id": "eval_id", "ood_rule": "eval_ood_rule", "ood_visual": "eval_ood_visual"}  # name -> split
SCORES = Path("data/scores.csv")
SPLITS = Path("data/splits")  # easy, medium, hard.parquet
MODEL_SOURCE = Path("data/model_source.json")
BENCHMARK_DATA = Path("data/benchmarks")  # the local copies of the reasoning benchmarks

MODELS = Path("models")
BASE = MODELS / "base"

METRICS = Path("metrics")
EVAL = METRICS / "eval"  # <model>.json, per_prompt/<model>.csv
BENCHMARKS = METRICS / "benchmarks"  # <model>.json, per_item/<model>.csv
REPORT = METRICS / "report"

STUDIES = Path("study")  # study/<name>/: claims and results


def split_file(split: str) -> Path:
    return GENERATED / f"{split}.parquet"


def stage_metrics(stage: str) -> Path:
    """metrics/<stage>.json: base, score, split, sft, grpo."""
    return METRICS / f"{stage}.json"


def live_dir(stage: str) -> Path:
    """A training stage's dvclive folder (per-step plots and curves)."""
    return METRICS / f"{stage}_live"


def eval_metrics(model: str) -> Path:
    return EVAL / f"{model}.json"


def eval_per_prompt(model: str) -> Path:
    return EVAL / "per_prompt" / f"{model}.csv"


def benchmark_metrics(model: str) -> Path:
    return BENCHMARKS / f"{model}.json"


def benchmark_per_item(model: str) -> Path:
    return BENCHMARKS / "per_item" / f"{model}.csv"

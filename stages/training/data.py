"""The training data: generated records in TRL's conversational format, and DC-SFT's difficulty subsets."""

from __future__ import annotations

import os

import datasets

from stages.core.params import ParamError
from stages.core.paths import SPLITS, TRAIN
from stages.core.storage import read_split

# Keep logs readable; set before datasets builds its first progress bar.
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
datasets.disable_progress_bars()


def conversational(split: datasets.Dataset) -> datasets.Dataset:
    """prompt/completion message lists from generated records, as TRL's trainers take them; VL records keep
    their `image` column (TRL puts the image before the prompt's text), still encoded on disk."""
    messages = datasets.Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p}] for p in split["prompt"]],
            "completion": [[{"role": "assistant", "content": a}] for a in split["answer"]],
        }
    )
    if "image" not in split.column_names:
        return messages
    return datasets.concatenate_datasets([messages, split.select_columns(["image"])], axis=1)


# DC-SFT's difficulty subsets: the buckets of data/splits that each value of `subset` trains on.
SUBSETS = {
    "all": ("easy", "medium", "hard"),
    "easy": ("easy",),
    "medium": ("medium",),
    "hard": ("hard",),
    "easy_medium": ("easy", "medium"),
}


def select_prompts(subset: str, balance: bool, subset_key: str, balance_key: str):
    """The training records of a difficulty subset, and how many came from each bucket.

    `all` without balancing is every training prompt (train.parquet). Otherwise the chosen buckets of
    data/splits are concatenated; `balance` first cuts every bucket to the size of the smallest one (DC-SFT's
    size-balanced difficulty study), keeping the first n in data order so the selection is deterministic.
    """
    if subset == "all" and not balance:
        data = read_split(TRAIN)
        if len(data) == 0:
            raise ParamError(f"{subset_key}='all' selects no prompts: {TRAIN} is empty")
        return data, {"all": len(data)}
    import pyarrow.parquet as pq

    for name in SUBSETS["all"]:
        if not (SPLITS / f"{name}.parquet").is_file():
            raise SystemExit(f"error: {SPLITS / name}.parquet not found; run `dvc repro split` first")
    sizes = {name: pq.read_metadata(SPLITS / f"{name}.parquet").num_rows for name in SUBSETS["all"]}
    if balance:
        smallest = min(sizes, key=sizes.get)
        if sizes[smallest] == 0:
            raise ParamError(
                f"{balance_key}=true cuts every bucket to the smallest, and the {smallest} "
                f"bucket is empty (see metrics/split.json); set {balance_key}=false"
            )
        sizes = dict.fromkeys(sizes, sizes[smallest])
    for name in SUBSETS[subset]:
        if sizes[name] == 0:
            raise ParamError(
                f"{subset_key}={subset!r} needs the {name} bucket, which is empty (see "
                "metrics/split.json); choose another subset or move the split.* thresholds"
            )
    chosen = [read_split(SPLITS / f"{name}.parquet").select(range(sizes[name])) for name in SUBSETS[subset]]
    return datasets.concatenate_datasets(chosen), {name: sizes[name] for name in SUBSETS[subset]}

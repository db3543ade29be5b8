"""Datasets on disk (parquet, byte-deterministic) and outputs written all-or-nothing."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import datasets

# Every split of every env has these columns; env-specific fields live in `task`, a JSON string,
# so one schema serves all envs. VL splits add an `image` column.
TEXT_FEATURES = {
    "id": datasets.Value("string"),
    "prompt": datasets.Value("string"),
    "answer": datasets.Value("string"),
    "task": datasets.Value("string"),
}


def write_split(records: list[dict], path: Path) -> None:
    features = dict(TEXT_FEATURES)
    if records and "image" in records[0]:
        features["image"] = datasets.Image()
    columns = {key: [record[key] for record in records] for key in features}
    datasets.Dataset.from_dict(columns, features=datasets.Features(features)).to_parquet(str(path))


def write_json(path: Path, data: dict) -> None:
    """A metrics or info file: indented, sorted as given, one trailing newline (stable diffs in git)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    """A table for git and `dvc plots`: a header from `fields` (or the first row's keys), "\\n" line ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields or list(rows[0]), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_split(path: Path) -> datasets.Dataset:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found; run `dvc repro generate` first")
    return datasets.Dataset.from_parquet(str(path))


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a scratch directory that replaces `final` only if the block finishes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield scratch
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        os.replace(scratch, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

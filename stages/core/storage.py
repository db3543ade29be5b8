"""Datasets on disk (parquet, byte-deterministic) and outputs written all-or-nothing."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import datasets
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq

# Every split of every env has these columns; env-specific fields live in `task`, a JSON string,
# so one schema serves all envs. VL splits add an `image` column.
TEXT_FEATURES = {
    "id": datasets.Value("string"),
    "prompt": datasets.Value("string"),
    "answer": datasets.Value("string"),
    "task": datasets.Value("string"),
}


# Records per parquet row group. write_split holds one group in memory at a time (for VL, this many
# images), so generating a 30000-image corpus needs no more memory than a small one.
ROWS_PER_GROUP = 1000


def write_split(records: Iterable[dict], path: Path, rows_per_group: int = ROWS_PER_GROUP) -> int:
    """Write records (a list or any iterable, read once) to one parquet file; return how many.

    Columns as `datasets` writes them: the features (`image` as `datasets.Image()`, PNG bytes) are in
    the schema's metadata, so `read_split` decodes images to PIL. The bytes depend only on the records
    and `rows_per_group`: the same records give the same file.
    """
    if rows_per_group < 1:
        raise ValueError(f"rows_per_group={rows_per_group} must be at least 1")
    rows = iter(records)
    first = next(rows, None)
    features = dict(TEXT_FEATURES)
    if first is not None and "image" in first:
        features["image"] = datasets.Image()
    features = datasets.Features(features)
    schema = features.arrow_schema
    if first is not None:
        rows = itertools.chain([first], rows)
    count = 0
    with pq.ParquetWriter(str(path), schema, **_column_options(schema)) as writer:
        while group := list(itertools.islice(rows, rows_per_group)):
            columns = features.encode_batch({key: [record[key] for record in group] for key in features})
            writer.write_table(pa.Table.from_pydict(columns, schema=schema))
            count += len(group)
    return count


def _column_options(schema: pa.Schema) -> dict:
    """Text: snappy, dictionary-encoded. Images (PNG bytes, already compressed): plain, uncompressed."""
    compression, dictionary, encoding = {}, [], {}
    for field in schema:
        if pa.types.is_struct(field.type):  # image: {bytes, path}
            for leaf in field.type:
                compression[f"{field.name}.{leaf.name}"] = "none"
                encoding[f"{field.name}.{leaf.name}"] = "PLAIN"
        else:
            compression[field.name] = "snappy"
            dictionary.append(field.name)
    return {"compression": compression, "use_dictionary": dictionary, "column_encoding": encoding}


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
    split = datasets.Dataset.from_parquet(str(path))
    if "image" in split.column_names:  # fail here, in one line, rather than mid-training or mid-rollout
        encoded = split.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
        for i, image in enumerate(encoded["image"]):
            try:
                PIL.Image.open(io.BytesIO(image["bytes"])).load()
            except (OSError, TypeError, ValueError) as error:
                raise SystemExit(
                    f"error: {path}: the image of record {i} cannot be decoded ({error}); rerun "
                    "`dvc repro generate --force`"
                ) from None
    return split


def read_records(path: Path, limit: int | None = None) -> list[dict]:
    """The first `limit` (default: all) records of a split as dicts, VL images decoded to PIL images."""
    split = read_split(path)
    return list(split.select(range(min(limit, len(split)))) if limit is not None else split)


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

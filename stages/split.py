"""Stage `split`: training prompts into easy / medium / hard by the base model's pass counts.

    dvc repro split          # or: python -m stages.split

easy: passes >= split.easy_min (null: k, all correct); hard: passes <= split.hard_max (0: none correct);
medium: the rest. Each takes one value, or one per env. Writes data/splits/{easy,medium,hard}.parquet
and metrics/split.json.
"""

from __future__ import annotations

import csv

from stages.core.params import ParamError, choice, get, integer, load_params, per_env
from stages.core.paths import SCORES, SPLITS, TRAIN, stage_metrics
from stages.core.provenance import provenance
from stages.core.storage import atomic_dir, read_split, write_json, write_split
from stages.envs import ENV_NAMES

METRICS = stage_metrics("split")
BUCKETS = ("easy", "medium", "hard")


def bucket_of(passes: int, easy_min: int, hard_max: int) -> str:
    return "easy" if passes >= easy_min else "hard" if passes <= hard_max else "medium"


def main() -> None:
    params = load_params()
    if not SCORES.is_file():
        raise SystemExit(f"error: {SCORES} not found; run `dvc repro score` first")
    with SCORES.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"error: {SCORES} holds no prompts; raise generate sizes.train above 0")
    scores = {row["id"]: int(row["passes"]) for row in rows}
    k = int(rows[0]["k"])
    env = choice(params, "env", ENV_NAMES)
    easy_key, hard_key = per_env(params, "split.easy_min", env), per_env(params, "split.hard_max", env)
    easy_min = k if get(params, easy_key) is None else integer(params, easy_key, minimum=1, maximum=k)
    hard_max = integer(params, hard_key, minimum=0)
    if hard_max >= easy_min:
        raise ParamError(f"{hard_key}={hard_max} must be below {easy_key}={easy_min} (k={k})")

    train = read_split(TRAIN).to_list()
    if {r["id"] for r in train} != scores.keys():
        raise SystemExit(f"error: {SCORES} does not match {TRAIN}; run `dvc repro score`")
    buckets = {name: [] for name in BUCKETS}
    for record in train:
        buckets[bucket_of(scores[record["id"]], easy_min, hard_max)].append(record)

    with atomic_dir(SPLITS) as out:
        for name, records in buckets.items():
            write_split(records, out / f"{name}.parquet")
    total = max(len(train), 1)
    metrics = {f"{name}_frac": round(len(buckets[name]) / total, 4) for name in BUCKETS}
    metrics |= {f"{name}_count": len(buckets[name]) for name in BUCKETS}
    metrics |= {"k": k, "easy_min": easy_min, "hard_max": hard_max}
    metrics["provenance"] = provenance(get(params, "data_seed"))
    write_json(METRICS, metrics)
    print("split: " + ", ".join(f"{name} {len(buckets[name])}" for name in BUCKETS))


if __name__ == "__main__":
    main()

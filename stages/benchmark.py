"""Stage `benchmark`: a model's accuracy on reasoning benchmarks read from local copies.

    dvc exp run -S 'benchmark.names=[gsm8k,math500]'    # or: python -m stages.benchmark sft

Off by default: with `benchmark.names: []` the stage loads no model and writes an empty
metrics/benchmarks/<model>.json, so the default `dvc repro` computes nothing more. Otherwise it reads each
named benchmark from `benchmark.paths.<name>` (a folder under data/benchmarks, the stage's DVC dependency),
answers every item greedily with the rollout engine (transformers or vLLM, batched) and scores it as the
benchmark's own evaluation does (stages/benchmarks/, docs/benchmarks.md), and strictly: a response that
states several answers is wrong under strict accuracy. Writes metrics/benchmarks/<model>.json (official and
strict accuracy per benchmark and their averages) and metrics/benchmarks/per_item/<model>.csv (every item's
official and strict verdict and the extracted answer).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from omegaconf import ListConfig, OmegaConf

from stages.benchmarks.catalogue import BENCHMARKS, benchmark, conversation, read_benchmark
from stages.benchmarks.scoring import Verdict, grade
from stages.core.params import ParamError, get, integer, load_params
from stages.core.paths import BENCHMARK_DATA, MODELS, benchmark_metrics, benchmark_per_item

ROOT = BENCHMARK_DATA  # every copy lives here: the folder is the stage's dependency in dvc.yaml
PER_ITEM_FIELDS = ["benchmark", "id", "correct", "strict", "extracted"]


def benchmark_names(params) -> list[str]:
    names = get(params, "benchmark.names")
    if names is None:
        return []
    if isinstance(names, ListConfig):
        names = OmegaConf.to_object(names)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ParamError(f"benchmark.names={names!r} must be a list of: {', '.join(BENCHMARKS)}")
    for name in names:
        benchmark(name)
    if len(set(names)) != len(names):
        raise ParamError(f"benchmark.names={names} names a benchmark twice; list each once")
    return names


def copy_path(params, name: str) -> Path:
    """benchmark.paths.<name>, which must lie under data/benchmarks so that DVC tracks the copy."""
    paths = get(params, "benchmark.paths") or {}
    if name not in paths:
        raise ParamError(
            f"benchmark.paths has no entry for {name}; add benchmark.paths.{name}: {ROOT / name}"
        )
    path = Path(paths[name])
    if path.is_absolute() or not path.resolve().is_relative_to(ROOT.resolve()):
        raise ParamError(
            f"benchmark.paths.{name}={str(path)!r} is outside {ROOT}, the stage's DVC dependency; bring the "
            f"copy in with `dvc add {ROOT / name}` or `dvc import-url {path} {ROOT / name}`"
        )
    return path


def summarize(items_by_name: dict[str, list], verdicts: dict[str, list[Verdict]]) -> dict[str, dict]:
    """Per benchmark: the official accuracy (`accuracy`, `correct`) and the strict one (`strict_accuracy`,
    `strict_correct`), over `items`."""
    sections = {}
    for name, items in items_by_name.items():
        correct = sum(v.correct for v in verdicts[name])
        strict = sum(v.strict for v in verdicts[name])
        sections[name] = {
            "accuracy": round(correct / len(items), 4),
            "correct": correct,
            "items": len(items),
            "strict_accuracy": round(strict / len(items), 4),
            "strict_correct": strict,
        }
    return sections


def average(sections: dict[str, dict], key: str) -> float:
    return round(sum(s[key] for s in sections.values()) / len(sections), 4)


def write_empty(model: str) -> None:
    """The outputs of a stage that runs no benchmark, as write_json and write_csv would write them, without
    importing stages.core.storage (datasets): the default `dvc repro` runs this for every model and
    experiment."""
    benchmark_per_item(model).parent.mkdir(parents=True, exist_ok=True)
    benchmark_per_item(model).write_text(",".join(PER_ITEM_FIELDS) + "\n")
    benchmark_metrics(model).write_text(json.dumps({"model": model, "benchmarks": {}}, indent=2) + "\n")


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit(
            "error: usage: python -m stages.benchmark MODEL (a directory under models/: base, sft, grpo)"
        )
    model = argv[0]
    params = load_params()
    names = benchmark_names(params)
    limit = get(params, "benchmark.limit")
    limit = None if limit is None else integer(params, "benchmark.limit", minimum=1)
    max_new_tokens = integer(params, "benchmark.max_new_tokens", minimum=1)
    if not names:
        write_empty(model)
        print(f"benchmark {model}: benchmark.names is empty, no benchmark runs")
        return

    from stages.core.provenance import provenance
    from stages.core.storage import write_csv, write_json
    from stages.inference.models import check_model_dir, is_vision_language
    from stages.inference.rollout import engine_params, make_engine, vllm_memory

    model_dir = MODELS / model
    if not model_dir.is_dir():
        raise SystemExit(f"error: {model_dir} does not exist; run `dvc repro {model}` first")
    visual = is_vision_language(check_model_dir(model_dir, "model directory"))
    for name in names:
        if BENCHMARKS[name].visual and not visual:
            raise ParamError(
                f"benchmark.names: {name} is a vision-language benchmark and {model_dir} is a text model; "
                f"remove {name} or use a VL env or model.path (text benchmarks: "
                f"{', '.join(n for n, b in BENCHMARKS.items() if not b.visual)})"
            )
    # Every copy is read and checked before the model loads: a bad copy stops the stage at once.
    items_by_name = {name: read_benchmark(name, copy_path(params, name), limit) for name in names}
    engine_name, batch_size, _ = engine_params(params)
    seed = integer(params, "seed", minimum=0)
    engine = make_engine(engine_name, model_dir, batch_size, seed, vllm_memory(params))

    start = time.perf_counter()
    verdicts, rows, tokens = {}, [], 0
    for name, items in items_by_name.items():
        outputs = engine.generate([conversation(item) for item in items], 1, 0.0, 1.0, max_new_tokens)
        verdicts[name] = []
        for item, [(text, generated)] in zip(items, outputs, strict=True):
            verdict = grade(item, text)
            verdicts[name].append(verdict)
            tokens += generated
            rows.append(
                {
                    "benchmark": name,
                    "id": item.id,
                    "correct": int(verdict.correct),
                    "strict": int(verdict.strict),
                    "extracted": verdict.extracted,
                }
            )
        correct, strict = sum(v.correct for v in verdicts[name]), sum(v.strict for v in verdicts[name])
        print(f"benchmark {model} on {name}: {correct}/{len(items)} correct, {strict} strictly")
    wall = time.perf_counter() - start
    sections = summarize(items_by_name, verdicts)
    metrics = {
        "model": model,
        "benchmarks": sections,
        "average": average(sections, "accuracy"),
        "strict_average": average(sections, "strict_accuracy"),
        "limit": limit,
        "max_new_tokens": max_new_tokens,
        "engine": engine_name,
        "generated_tokens": tokens,
        "wall_s": round(wall, 1),
        "items_per_s": round(len(rows) / wall, 2) if wall > 0 else None,
        "provenance": provenance(get(params, "data_seed")),
    }
    write_csv(benchmark_per_item(model), rows, fields=PER_ITEM_FIELDS)
    write_json(benchmark_metrics(model), metrics)
    print(
        f"benchmark {model}: average {metrics['average']} (strict {metrics['strict_average']}) over "
        f"{', '.join(names)}; "
        f"wrote {benchmark_metrics(model)}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])

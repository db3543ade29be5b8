"""Stage `report`: one table of every model's ID and OOD success, with its training cost.

    dvc repro report          # or: python -m stages.report

Reads metrics/eval/<model>.json (evaluate) and metrics/{base,score,split,sft,grpo}.json. Writes:

- metrics/headline.json: the numbers runs are compared by (`headline`), the first columns of `dvc exp show`
  and `dvc metrics diff`;
- metrics/summary.json and metrics/summary.md: models x eval sets, deltas against base, FLOPs, wall time,
  gradient norms; for VL envs the recognition of every eval set;
- metrics/report/<model>.csv, the data behind the ID-vs-OOD and OOD-vs-FLOPs plots declared in dvc.yaml, and
  metrics/report/recognition/<model>.csv, behind the success-vs-recognition plots (header only for text
  envs, so the plots stay empty rather than failing).

A model whose stage has not run shows "-". Where the benchmark stage ran benchmarks
(metrics/benchmarks/<model>.json), the summary adds a table of their accuracies, official and strict, and
metrics/report/benchmarks/<model>.csv (official accuracy), the data of the benchmark plot; without benchmarks
every output is as before.
"""

from __future__ import annotations

import json
from pathlib import Path

from stages.core.params import ParamError, get, load_params
from stages.core.paths import METRICS, REPORT, benchmark_metrics, eval_metrics, stage_metrics
from stages.core.provenance import provenance
from stages.core.storage import write_csv, write_json

MODELS = ("base", "sft", "grpo")
EVALS = {"id": "ID", "ood_rule": "OOD rule", "ood_visual": "OOD visual"}
SUMMARY_JSON = METRICS / "summary.json"
SUMMARY_MD = METRICS / "summary.md"
HEADLINE = METRICS / "headline.json"  # the numbers runs are compared by
TIMED = ("base", "score", "sft", "grpo")  # the stages whose FLOPs and wall time the headline compares
RECOGNITION_DIR = REPORT / "recognition"
BENCHMARK_PLOT_DIR = REPORT / "benchmarks"
# Success and recognition of every eval set side by side, one row per model (VL envs only).
RECOGNITION_FIELDS = ["model", *(f for name in EVALS for f in (name, f"recognition_{name}"))]
# Metrics over the sampled answers; the others (greedy_success, step_accuracy, route_success) are greedy.
SAMPLED = ("mean_success", "pass_at_k", "route_success_sampled")


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def recognition_key(metric: str) -> str:
    """The recognition measured on the same answers as `metric`: sampled or greedy."""
    return "recognition_sampled" if metric in SAMPLED else "recognition"


def summarize(evals: dict[str, dict | None], training: dict[str, dict | None], metric: str) -> dict:
    """{model: {eval: value, delta_<eval>: value - base, flops, wall_s, ...}} for the models that ran.

    VL evals (with recognition) add recognition_<eval>, measured on the same answers as `metric`.
    """
    base = evals.get("base") or {}
    recognition = recognition_key(metric)
    rows = {}
    for model, result in evals.items():
        if result is None:
            continue
        row = {}
        for name in EVALS:
            if name not in result:
                continue
            if metric not in result[name]:
                raise ParamError(
                    f"report.metric={metric!r} is not in {eval_metrics(model)}; use one "
                    f"of: {', '.join(result[name])}"
                )
            row[name] = result[name][metric]
            if name in base:
                row[f"delta_{name}"] = round(result[name][metric] - base[name][metric], 4)
        for name in EVALS:
            if recognition in result.get(name, {}):
                row[f"recognition_{name}"] = result[name][recognition]
        cost = training.get(model)
        # The base model is the starting point: no post-training compute.
        row["flops"] = 0 if model == "base" else cost and cost.get("flops")
        for key in ("wall_s", "train_prompts", "grad_norm_mean", "grad_norm_max"):
            row[key] = cost.get(key) if cost else None
        rows[model] = row
    return rows


def headline(rows: dict, names: list[str], benchmarks: dict[str, dict]) -> dict:
    """The numbers a researcher compares between runs, in one small file: success per model and eval set
    (report.metric), FLOPs and wall time per stage, the split's shares and, where benchmarks ran, their
    average per model. Every other field (provenance, histograms, FLOPs by part, ...) is in the stages' own
    files."""
    success = {
        model: {name: row[name] for name in names if row.get(name) is not None} for model, row in rows.items()
    }
    stages = {stage: read_json(stage_metrics(stage)) or {} for stage in TIMED}
    numbers = {
        "success": success,
        "flops": {stage: m["flops"] for stage, m in stages.items() if m.get("flops") is not None},
        "wall_s": {stage: m["wall_s"] for stage, m in stages.items() if m.get("wall_s") is not None},
    }
    split = read_json(stage_metrics("split"))
    if split is not None:
        numbers["split"] = {bucket: split[f"{bucket}_frac"] for bucket in ("easy", "medium", "hard")}
    if benchmarks:
        numbers["benchmarks"] = {model: row["average"] for model, row in benchmarks.items()}
    return numbers


def fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def recognized_evals(rows: dict) -> list[str]:
    """The eval sets with a recognition number for some model, in EVALS order (none for text envs)."""
    return [name for name in EVALS if any(f"recognition_{name}" in row for row in rows.values())]


def markdown(rows: dict, evals: list[str], header: str, details: dict[str, dict]) -> str:
    recognized = recognized_evals(rows)
    columns = ["model"] + [c for name in evals for c in (EVALS[name], f"Δ {EVALS[name]}")]
    columns += [f"{EVALS[name]} recognition" for name in recognized]
    columns += ["train prompts", "post-training FLOPs", "wall time (s)", "grad norm mean / max"]
    lines = [header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for model in MODELS:
        row = rows.get(model, {})
        cells = [model]
        for name in evals:
            delta = row.get(f"delta_{name}")
            cells += [fmt(row.get(name)), "" if model == "base" and row else fmt(delta, "+.3f")]
        cells += [fmt(row.get(f"recognition_{name}")) for name in recognized]
        grad = f"{fmt(row.get('grad_norm_mean'), '.2f')} / {fmt(row.get('grad_norm_max'), '.2f')}"
        cells += [
            fmt(row.get("train_prompts"), "d"),
            fmt(row.get("flops"), ".3g"),
            fmt(row.get("wall_s"), ".1f"),
            "-" if model == "base" else grad,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    # Every eval number, for readers who want greedy vs sampled, pass@k or V-IRL route success.
    keys = sorted({key for result in details.values() for name in evals for key in result.get(name, {})})
    lines += [
        "",
        "All eval metrics:",
        "",
        "| model | eval set | " + " | ".join(keys) + " |",
        "|" + "---|" * (len(keys) + 2),
    ]
    for model, result in details.items():
        for name in evals:
            cells = [fmt(result[name].get(key)) for key in keys] if name in result else ["-"] * len(keys)
            lines.append(f"| {model} | {EVALS[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# The keys of a benchmark row that name no benchmark
BENCHMARK_SUMMARY_KEYS = ("average", "delta_average", "strict")


def benchmark_row(result: dict, accuracy: str, average: str) -> dict | None:
    """{benchmark: accuracy, ..., average} of one model's benchmark metrics, by the official fields
    (accuracy, average) or the strict ones; None where the file has no such fields (made before strict)."""
    sections = result["benchmarks"]
    if average not in result or any(accuracy not in section for section in sections.values()):
        return None
    return {name: section[accuracy] for name, section in sections.items()} | {"average": result[average]}


def add_deltas(rows: dict[str, dict]) -> None:
    """delta_average against base, for the rows that ran the benchmarks base ran."""
    base = rows.get("base")
    ran_by_base = set(base or {})
    for row in rows.values():
        if base is not None and set(row) == ran_by_base:
            row["delta_average"] = round(row["average"] - base["average"], 4)


def benchmark_rows(results: dict[str, dict | None]) -> dict[str, dict]:
    """{model: {benchmark: accuracy, ..., average, delta_average, strict}} for the models that ran benchmarks;
    the delta is against base where base ran the same benchmarks. `strict` holds the same numbers by strict
    accuracy (docs/benchmarks.md#strict-accuracy), where the metrics have them."""
    ran = {model: result for model, result in results.items() if result and result.get("benchmarks")}
    rows = {model: benchmark_row(result, "accuracy", "average") for model, result in ran.items()}
    strict = {
        model: benchmark_row(result, "strict_accuracy", "strict_average") for model, result in ran.items()
    }
    rows, strict = ({m: row for m, row in table.items() if row is not None} for table in (rows, strict))
    add_deltas(rows)
    add_deltas(strict)
    for model, row in rows.items():
        if model in strict:
            row["strict"] = strict[model]
    return rows


def benchmark_markdown(rows: dict[str, dict], results: dict[str, dict | None]) -> str:
    """The benchmark table: a row per model by the official parse and, where the metrics have it, a row
    under it by strict accuracy."""
    names = sorted({name for row in rows.values() for name in row if name not in BENCHMARK_SUMMARY_KEYS})
    first = next(result for result in results.values() if result and result.get("benchmarks"))
    limit = "all items" if first["limit"] is None else f"the first {first['limit']} items of each"
    caption = (
        "Reasoning benchmarks (stage `benchmark`): accuracy of greedy answers of at most "
        f"{first['max_new_tokens']} tokens, {limit}; Δ average is against base."
    )
    strict = any("strict" in row for row in rows.values())
    if strict:
        caption += (
            " The rows `<model> strict` give strict accuracy, which counts no answer that states several"
            " options or boxed answers (docs/benchmarks.md); the others, the benchmarks' official parse."
        )
    lines = [
        "",
        caption,
        "",
        "| model | " + " | ".join(names) + " | average | Δ average |",
        "|" + "---|" * (len(names) + 3),
    ]
    for model in MODELS:
        row = rows.get(model, {})
        labels = [(model, row)] + ([(f"{model} strict", row.get("strict", {}))] if strict else [])
        for label, numbers in labels:
            delta = "" if model == "base" and numbers else fmt(numbers.get("delta_average"), "+.3f")
            cells = [fmt(numbers.get(name)) for name in names] + [fmt(numbers.get("average")), delta]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    params = load_params()
    metric = get(params, "report.metric")
    evals = {model: read_json(eval_metrics(model)) for model in MODELS}
    if evals["base"] is None:
        raise SystemExit(f"error: {eval_metrics('base')} not found; run `dvc repro evaluate@base` first")
    training = {model: read_json(stage_metrics(model)) for model in ("sft", "grpo")}
    rows = summarize(evals, training, metric)
    names = [name for name in EVALS if name in evals["base"]]
    base = evals["base"]
    header = (
        f"Success (`{metric}`) on {base['env']}, SFT subset `{get(params, 'subset')}`. Sampled metrics: "
        f"{base['samples']} answers per prompt at temperature {base['temperature']}, pass@k with "
        f"k={base['k']}. Δ is against base; '-' means that stage has not run."
    )
    details = {model: result for model, result in evals.items() if result is not None}
    recognized = recognized_evals(rows)
    if recognized:
        header += (
            f" Recognition (`{recognition_key(metric)}`): share of the same answers whose stated cards or"
            " observation match the image."
        )

    summary = {"env": base["env"], "subset": get(params, "subset"), "metric": metric, "models": rows}
    if recognized:
        summary["recognition"] = recognition_key(metric)
    benchmarks = {model: read_json(benchmark_metrics(model)) for model in MODELS}
    benchmark_table = benchmark_rows(benchmarks)
    if benchmark_table:
        summary["benchmarks"] = benchmark_table
    summary["provenance"] = provenance(get(params, "data_seed"))
    write_json(SUMMARY_JSON, summary)
    write_json(HEADLINE, headline(rows, names, benchmark_table))
    text = markdown(rows, names, header, details)
    if benchmark_table:
        text += benchmark_markdown(benchmark_table, benchmarks)
        for model, row in benchmark_table.items():  # one file per model: the plot's legend names it
            points = [{"benchmark": name, "accuracy": row[name]} for name in benchmarks[model]["benchmarks"]]
            write_csv(BENCHMARK_PLOT_DIR / f"{model}.csv", points, fields=["benchmark", "accuracy"])
    SUMMARY_MD.write_text(text)
    # One file per model, so DVC's plots name each model in the legend.
    for model in MODELS:
        ready = model in rows and rows[model]["flops"] is not None
        row = [{"model": model, **rows[model]}] if ready else []
        fields = ["model", *names, *(f"recognition_{name}" for name in recognized), "flops"]
        write_csv(REPORT / f"{model}.csv", row, fields=fields)
        # Written for every env and model: DVC renders a header-only file as an empty plot, without a warning.
        seen = model in rows and any(f"recognition_{name}" in rows[model] for name in recognized)
        write_csv(
            RECOGNITION_DIR / f"{model}.csv",
            [{"model": model, **rows[model]}] if seen else [],
            fields=RECOGNITION_FIELDS,
        )
    print(SUMMARY_MD.read_text())


if __name__ == "__main__":
    main()

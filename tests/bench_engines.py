"""Benchmark: the transformers and vLLM rollout engines on the embedded gp_l base model, on this machine.

    dvc repro base && python tests/bench_engines.py docs/engines_cpu.json   # vLLM install: docs/engines.md

Measures what `rollout.engine: auto` decides on: each engine's start, greedy answers on the 200 OOD-rule eval
prompts (and how many the two engines answer alike), and score's workload (every training prompt, k=8 samples
at score's temperature), repeated; medians of the repeats. Writes the figures with the setup that made them
(stages/core/provenance.py): run it on a quiet machine.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

REPEATS = 3


def main(out: Path) -> None:
    from stages.core.params import load_params
    from stages.core.provenance import provenance
    from stages.core.storage import read_records, write_json
    from stages.envs import get_env
    from stages.inference.rollout import make_engine, rollout

    params = load_params()
    env = get_env("gp_l")
    ood = read_records(Path("data/generated/eval_ood_rule.parquet"))
    train = read_records(Path("data/generated/train.parquet"))
    k, temperature, tokens = params.score.k, params.score.temperature, params.rollout.max_new_tokens
    results, greedy = {}, {}
    for name in ("hf", "vllm"):
        began = time.perf_counter()
        engine = make_engine(name, "models/base", params.rollout.batch_size, 0)
        start_s = time.perf_counter() - began
        began = time.perf_counter()
        greedy[name] = [e[0].attempts for e in rollout(engine, env, ood, 1, 0.0, 1.0, tokens)]
        greedy_s = time.perf_counter() - began
        runs = []
        for _ in range(REPEATS):
            began = time.perf_counter()
            episodes = rollout(engine, env, train, k, temperature, 1.0, tokens)
            seconds = time.perf_counter() - began
            generated = sum(e.generated_tokens for group in episodes for e in group)
            passes = sum(e.success for group in episodes for e in group) / (k * len(train))
            runs.append({"seconds": seconds, "tokens_per_s": generated / seconds, "pass_rate": passes})
        results[name] = {
            "start_s": round(start_s, 1),
            "greedy_ood_s": round(greedy_s, 2),
            "score_s_median": round(statistics.median(r["seconds"] for r in runs), 1),
            "score_tokens_per_s_median": round(statistics.median(r["tokens_per_s"] for r in runs)),
            "score_pass_rate": [round(r["pass_rate"], 4) for r in runs],
        }
        print(name, results[name], flush=True)
        del engine
    same = sum(a == b for a, b in zip(greedy["hf"], greedy["vllm"], strict=True))
    workload = dict(greedy_prompts=len(ood), score_prompts=len(train), k=k, temperature=temperature,
                    max_new_tokens=tokens, repeats=REPEATS)  # fmt: skip
    summary = {"workload": workload, "greedy_agreement": f"{same}/{len(ood)}", "engines": results}
    write_json(out, summary | {"provenance": provenance(params.data_seed)})


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/engines_cpu.json"))

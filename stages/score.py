"""Stage `score`: how often the starting model solves each training prompt (DC-SFT's difficulty).

    dvc repro score          # or: python -m stages.score

Samples `score.k` answers per training prompt from models/base, verifies each with the environment,
and writes the pass counts (data/scores.csv), metrics/score.json and the pass-count histogram.
"""

from __future__ import annotations

import time

from stages.core.params import choice, integer, load_params, number
from stages.core.paths import BASE, SCORES, TRAIN, stage_metrics
from stages.core.provenance import provenance
from stages.core.storage import read_records, write_csv, write_json
from stages.envs import ENV_NAMES, get_env
from stages.inference.flops import ComputeMeter
from stages.inference.rollout import engine_params, make_engine, rollout, vllm_memory

METRICS = stage_metrics("score")
HISTOGRAM = METRICS.with_name("score_hist.csv")


def main() -> None:
    start = time.perf_counter()  # wall_s covers the whole stage, as sft's and grpo's do
    params = load_params()
    env = get_env(choice(params, "env", ENV_NAMES))
    seed = integer(params, "data_seed", minimum=0)
    k = integer(params, "score.k", minimum=1)
    temperature = number(params, "score.temperature", minimum=0.0)
    top_p = number(params, "score.top_p", minimum=0.0, maximum=1.0)
    viter = integer(params, "score.viter", minimum=1)
    engine_name, batch_size, max_new_tokens = engine_params(params)

    records = read_records(TRAIN)
    engine = make_engine(engine_name, BASE, batch_size, seed, vllm_memory(params))
    meter = ComputeMeter().watch(engine.model) if engine_name == "hf" else None  # vLLM's runs outside torch
    began = time.perf_counter()
    episodes = rollout(engine, env, records, k, temperature, top_p, max_new_tokens, viter)
    rollout_s = time.perf_counter() - began

    passes = [sum(e.success for e in group) for group in episodes]
    tokens = sum(e.generated_tokens for group in episodes for e in group)
    histogram = [passes.count(c) for c in range(k + 1)]
    scores = [{"id": r["id"], "passes": p, "k": k} for r, p in zip(records, passes, strict=True)]
    write_csv(SCORES, scores, fields=["id", "passes", "k"])  # the header even when there are no prompts
    metrics = {
        "prompts": len(records),
        "k": k,
        "mean_pass_rate": round(sum(passes) / (k * len(records)), 4) if records else 0.0,
        "pass_histogram": dict(enumerate(histogram)),
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / rollout_s, 1) if rollout_s > 0 else 0.0,
        "flops": round(meter.flops["generation"]) if meter else None,  # prefill and decoding (hf engine)
        "engine": engine_name,
        "rollout_s": round(rollout_s, 1),
        "wall_s": round(time.perf_counter() - start, 1),
        "provenance": provenance(seed),
    }
    write_json(METRICS, metrics)
    write_csv(HISTOGRAM, [{"passes": c, "prompts": n} for c, n in enumerate(histogram)])
    print(
        f"score: {len(records)} prompts x {k} samples in {rollout_s:.1f}s, mean pass rate "
        f"{metrics['mean_pass_rate']}, histogram {histogram}"
    )


if __name__ == "__main__":
    main()

"""Stage `evaluate`: how well one model solves the ID and OOD eval sets.

    dvc repro evaluate@sft          # or: python -m stages.evaluate sft   (base | sft | grpo)

Reads models/<model> and data/generated/eval_{id,ood_rule,ood_visual}.parquet (ood_visual for VL
envs only). Per eval set: greedy success (temperature 0), mean success over `evaluate.samples`
sampled answers, and pass@k with the unbiased estimator; V-IRL adds per-step accuracy and route
success (every step of a route right); VL envs add recognition, the share of answers whose stated
cards (GP-VL) or observation (V-IRL-VL) match the image, greedy and sampled. Writes
metrics/eval/<model>.json, and the success of every prompt in metrics/eval/per_prompt/<model>.csv,
which the study's claims table resamples for its intervals.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict

from stages.core.params import ParamError, choice, get, integer, load_params, number
from stages.core.paths import EVAL_SETS, MODELS, eval_metrics, eval_per_prompt, split_file
from stages.core.provenance import provenance
from stages.core.storage import read_records, write_csv, write_json
from stages.envs import ENV_NAMES, get_env, independent_unit
from stages.inference.rollout import engine_params, make_engine, rollout, vllm_memory


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k answers drawn from n (c of them correct) is correct."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def route_success(records: list[dict], successes: list[bool]) -> float:
    """Share of V-IRL routes whose every step is right; steps are grouped by the task's route id."""
    routes = defaultdict(list)
    for record, success in zip(records, successes, strict=True):
        routes[json.loads(record["task"])["route"]].append(success)
    return sum(all(steps) for steps in routes.values()) / len(routes)


def recognized(episode) -> bool:
    """Whether an answer read the image right; an answer that states nothing parsable (None) did not."""
    return episode.recognized is True


def score_section(records, greedy, sampled, k: int, virl: bool, visual: bool = False) -> dict[str, float]:
    """Every number lies in [0, 1], so sections compare across models and envs.

    `greedy` and `sampled` hold one list of episodes per record (1 and n of them). With `visual`,
    `recognition` is the share of greedy answers that read the image right, `recognition_sampled`
    the share of sampled ones: the same answers as greedy_success and mean_success.
    """
    n = len(sampled[0])
    first = [episodes[0].success for episodes in greedy]
    passes = [sum(e.success for e in episodes) for episodes in sampled]
    section = {
        "greedy_success": sum(first) / len(records),
        "mean_success": sum(passes) / (n * len(records)),
        "pass_at_k": sum(pass_at_k(n, c, k) for c in passes) / len(records),
    }
    if virl:
        section["step_accuracy"] = section["greedy_success"]
        section["route_success"] = route_success(records, first)
        # Sample j of every step forms one sampled walk of the route; average over the n walks.
        walks = [route_success(records, [eps[j].success for eps in sampled]) for j in range(n)]
        section["route_success_sampled"] = sum(walks) / n
    if visual:
        section["recognition"] = sum(recognized(episodes[0]) for episodes in greedy) / len(records)
        read = sum(recognized(e) for episodes in sampled for e in episodes)
        section["recognition_sampled"] = read / (n * len(records))
    return {key: round(value, 4) for key, value in section.items()}


def per_prompt_rows(name: str, records, greedy, sampled, visual: bool = False) -> list[dict]:
    """One row per prompt: its independent unit (the route of a V-IRL step, else the prompt: what the claims'
    bootstrap resamples), greedy success (0 or 1), the share of sampled answers that succeed and, for VL
    envs, whether the greedy answer read the image right (0 or 1)."""
    rows = []
    for record, first, answers in zip(records, greedy, sampled, strict=True):
        row = {
            "set": name,
            "id": record["id"],
            "unit": independent_unit(record),
            "greedy_success": int(first[0].success),
            "mean_success": round(sum(e.success for e in answers) / len(answers), 4),
        }
        if visual:
            row["recognized"] = int(recognized(first[0]))
        rows.append(row)
    return rows


def load_eval_sets(env) -> dict[str, list[dict]]:
    sections = [name for name in EVAL_SETS if name != "ood_visual" or env.visual]
    sets = {}
    for name in sections:
        path = split_file(EVAL_SETS[name])
        if not path.is_file():
            raise SystemExit(f"error: {path} not found (env={env.name}); run `dvc repro generate` first")
        records = read_records(path)
        if not records:
            key = f"{env.params_key}.sizes.{EVAL_SETS[name]}"
            raise ParamError(f"{path} holds no records; raise {key} above 0 and run `dvc repro generate`")
        sets[name] = records
    return sets


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit(
            "error: usage: python -m stages.evaluate MODEL (a directory under models/: base, sft, grpo)"
        )
    model_dir = MODELS / argv[0]
    if not model_dir.is_dir():
        raise SystemExit(f"error: {model_dir} does not exist; run `dvc repro {argv[0]}` first")
    params = load_params()
    env = get_env(choice(params, "env", ENV_NAMES))
    seed = integer(params, "seed", minimum=0)
    k = integer(params, "evaluate.k", minimum=1)
    samples = get(params, "evaluate.samples")
    samples = k if samples is None else integer(params, "evaluate.samples", minimum=k)
    temperature = number(params, "evaluate.temperature", minimum=0.0)
    top_p = number(params, "evaluate.top_p", minimum=0.0, maximum=1.0)
    viter = integer(params, "evaluate.viter", minimum=1)
    engine_name, batch_size, max_new_tokens = engine_params(params)
    eval_sets = load_eval_sets(env)

    engine = make_engine(engine_name, model_dir, batch_size, seed, vllm_memory(params))
    start = time.perf_counter()
    metrics = {
        "model": argv[0],
        "env": env.name,
        "k": k,
        "samples": samples,
        "temperature": temperature,
        "viter": viter,
    }
    rows = []
    for name, records in eval_sets.items():
        greedy = rollout(engine, env, records, 1, 0.0, 1.0, max_new_tokens, viter)
        sampled = rollout(engine, env, records, samples, temperature, top_p, max_new_tokens, viter)
        metrics[name] = score_section(records, greedy, sampled, k, env.name.startswith("virl"), env.visual)
        rows += per_prompt_rows(name, records, greedy, sampled, env.visual)
        print(f"evaluate {argv[0]} on {name} ({len(records)} prompts): {metrics[name]}")
    metrics["prompts"] = {name: len(records) for name, records in eval_sets.items()}
    metrics["wall_s"] = round(time.perf_counter() - start, 1)
    metrics["provenance"] = provenance(get(params, "data_seed"))
    write_csv(eval_per_prompt(argv[0]), rows)
    write_json(eval_metrics(argv[0]), metrics)
    print(f"evaluate {argv[0]}: wrote {eval_metrics(argv[0])} in {metrics['wall_s']}s")


if __name__ == "__main__":
    main(sys.argv[1:])

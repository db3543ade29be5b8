"""Compute accounting (stages/inference/flops.py) against torch's own FLOP counter, and the run metrics
built on it.

torch.utils.flop_counter.FlopCounterMode counts the matmul FLOPs of every aten op a block runs, backward
included. Its registry misses two ops these runs use: the CPU's fused attention kernel
(aten._scaled_dot_product_flash_attention_for_cpu) and in-place addmm (TRL's fused LM head computes its
gradients with it). Both are registered here with torch's own formulas, so they are checked too.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import copy_repo, set_params
from PIL import Image
from test_sft import write_buckets
from torch.utils.flop_counter import (
    FlopCounterMode,
    mm_flop,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from stages.inference.flops import PARTS, ComputeMeter
from stages.inference.models import build_model, build_processor, build_tokenizer, build_vl_model

CPU_ATTENTION = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
if torch.ops.aten.addmm_ not in torch.utils.flop_counter.flop_registry:
    # in-place addmm, which TRL's fused LM-head kernel uses for its gradients (trl/kernels/chunked_logprob.py)
    @register_flop_formula(torch.ops.aten.addmm_)
    def _addmm_inplace(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs):
        return mm_flop(a_shape, b_shape)


if CPU_ATTENTION not in torch.utils.flop_counter.flop_registry:

    @register_flop_formula(CPU_ATTENTION)
    def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    @register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, query, key, value)


def measured(block) -> int:
    with FlopCounterMode(display=False) as counter:
        block()
    return counter.get_total_flops()


def close(counted: float, truth: float, tolerance: float) -> bool:
    return abs(counted / truth - 1) <= tolerance


def test_meter_counts_a_training_step_and_a_generation_as_torch_does():
    torch.manual_seed(0)
    tokenizer = build_tokenizer(["a b c d 1 2 3 4 5 6 7 8 9"])
    model = build_model(tokenizer, hidden_size=64, layers=2, heads=2, max_length=128, seed=0)
    meter = ComputeMeter().watch(model)
    ids = torch.randint(5, 15, (4, 20))
    mask = torch.ones_like(ids)
    mask[0, :6] = 0  # a left-padded row: padding is computed, so it is counted

    truth = measured(lambda: model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward())
    assert meter.flops.keys() == {"train"} and close(meter.flops["train"], truth, 0.02)

    meter.flops.clear()
    with torch.no_grad():
        generate = dict(max_new_tokens=10, min_new_tokens=10, do_sample=False, pad_token_id=0)
        truth = measured(lambda: model.generate(input_ids=ids, attention_mask=mask, **generate))
    assert meter.flops.keys() == {"generation"} and close(meter.flops["generation"], truth, 0.02)

    meter.flops.clear()
    with torch.no_grad():  # a forward without a KV cache or gradient: old-policy log-probs
        truth = measured(lambda: model(input_ids=ids, attention_mask=mask))
    assert meter.flops.keys() == {"scoring"} and close(meter.flops["scoring"], truth, 0.02)

    meter.flops.clear()
    with meter.charged_to("curves"), torch.no_grad():
        model(input_ids=ids)
    assert meter.flops.keys() == {"curves"} and meter.total() == 0  # evaluations are not post-training


def test_meter_counts_the_vision_tower_on_its_patches():
    tokenizer = build_tokenizer(["a b"], vision=True)
    model = build_vl_model(tokenizer, 32, 2, 2, 256, vision_hidden_size=32, vision_layers=2, seed=0)
    processor = build_processor(tokenizer, 112, 56)
    meter = ComputeMeter().watch(model)
    images = [Image.new("RGB", (112, 56), "white"), Image.new("RGB", (56, 56), "red")]  # 8 and 4 patches
    texts = [
        processor.apply_chat_template(
            [
                {
                    "role": "user",
                    "content": [{"type": "image", "image": image}, {"type": "text", "text": "a b"}],
                }
            ],
            add_generation_prompt=True,
            tokenize=False,
        )
        for image in images
    ]
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
    truth = measured(lambda: model(**inputs, labels=inputs["input_ids"]).loss.backward())
    assert close(meter.flops["train"], truth, 0.03)
    assert 0 < meter.flops["vision"] < meter.flops["train"]


@pytest.fixture
def repo(micro_split, tmp_path, monkeypatch):
    repo = copy_repo(micro_split, tmp_path / "repo")
    write_buckets(repo)
    monkeypatch.chdir(repo)
    return repo


@pytest.mark.slow
@pytest.mark.parametrize(
    "stage, overrides",
    [
        ("sft", {"sft.steps": 2, "sft.batch_size": 16}),
        (  # the recomputed forward of activation checkpointing, in accumulated micro-batches
            "sft",
            {
                "sft.steps": 2,
                "sft.batch_size": 16,
                "train.micro_batch_size": 4,
                "train.activation_checkpointing": True,
            },
        ),
        (  # beta > 0 runs the reference model; viter 2 retries with the verifier's feedback
            "grpo",
            {
                "grpo.steps": 2,
                "grpo.prompts_per_step": 2,
                "grpo.num_generations": 4,
                "grpo.beta": 0.04,
                "grpo.viter": 2,
                "rollout.max_new_tokens": 16,
            },
        ),  # fmt: skip
    ],
)
def test_a_stage_reports_the_flops_torch_counts(repo, stage, overrides):
    """The whole stage, model loading to metrics, under FlopCounterMode (the curves off: they are not
    post-training compute); its metrics/<stage>.json must give the same total within 10%."""
    import importlib

    set_params(repo, {**overrides, "curves.eval_every": 0, "checkpoint.every": 0})
    main = importlib.import_module(f"stages.{stage}").main
    truth = measured(main)
    metrics = json.loads((repo / "metrics" / f"{stage}.json").read_text())
    parts = metrics["flops_parts"]
    print(f"{stage}: counted {metrics['flops']:.4g}, torch {truth:.4g}, ratio {metrics['flops'] / truth:.4f}")
    assert metrics["flops"] == sum(parts[p] for p in PARTS)
    assert close(metrics["flops"], truth, 0.10), (
        metrics["flops"],
        truth,
        parts,
    )  # the bound; 0.1% here
    if stage == "grpo":
        assert parts["generation"] > 0 and parts["reference"] > 0
        # the paper's first-order formula leaves out the reference model, padding and attention
        assert metrics["flops_paper_formula"] < metrics["flops"]
    provenance = metrics["provenance"]
    assert provenance["data_seed"] == 0 and provenance["versions"]["trl"] and "cpu" in provenance["device"]

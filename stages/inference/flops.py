"""Compute accounting: the FLOPs of every forward and backward a run makes, in one place.

The SFTvsRL paper charges 6·N per trained token and 2·N per generated token (N parameters). That first-order
formula leaves out what a real run also computes: padding, attention, the reference model's forward when
GRPO's beta > 0, the old-policy forward, the prefill of every retried history, the masked feedback tokens
(they still go forward and backward), and for a VLM the vision tower on its image patches. So instead of
multiplying token counts, `ComputeMeter` watches the modules that do the arithmetic and adds up the matmul
FLOPs of each call from the shapes it actually sees, as `torch.utils.flop_counter.FlopCounterMode` counts
them (tests/test_compute.py checks the two agree):

- a linear layer with input x of `tokens` rows: 2·in·out·tokens forward; its backward, when it runs, computes
  the input's gradient (if x requires grad) and the weight's (if the weight does), 2·in·out·tokens each;
- an attention call over Tq queries and Tk keys: 4·B·heads·head_dim·Tq·Tk forward, 2.5 times that backward
  (the fused kernels recompute the scores); a vision tower's attention runs per image, over its patches;
- a convolution (a vision tower's patch embedding): 2·outputs·(in_channels·kernel) forward;
- TRL's fused LM head (its trainers project the hidden states through `lm_head.weight` in a chunked kernel,
  outside the module): 2·vocab·hidden per scored position forward, and three times that backward.

Each call is charged to a part of the run: `train` (forward and backward of the policy), `generation`
(prefill and decoding of the policy under a KV cache), `reference` (the frozen reference model), `scoring`
(policy forwards without gradient outside generation: the old-policy log-probs, or a LoRA run's reference
pass with its adapters off) and `curves` (the scaling-curve evaluations, which are not post-training and not
in the total). `vision` is the share of the tower inside the other parts. Elementwise work (norms,
activations, the optimizer) is not counted, here or by FlopCounterMode.

vLLM generates outside the watched modules: for it `generation_estimate` charges, per token, the same
linear-layer FLOPs and the attention over the context it has, from the token counts TRL logs.

A training run logs these counts at every step (`ComputeLog`, stages/training/callbacks.py), so the
curves, the run metrics, the FLOPs budget and a resumed run all read one count.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import time
from collections import defaultdict

import torch
from transformers import PreTrainedModel

from stages.core.private import fused_lm_head_flops
from stages.inference.models import VISION_TOWER

PARTS = ("train", "generation", "reference", "scoring")  # the post-training total
KEY, TOTAL = "flops", "flops/total"  # log-history keys: flops/total and flops/<part>


class ComputeMeter:
    """Adds up the matmul FLOPs of the modules it watches, per part of the run."""

    def __init__(self):
        self.flops: defaultdict[str, float] = defaultdict(float)
        self.seconds = 0.0  # spent in charged_to("curves") blocks
        self._forced: str | None = None
        self._part = "train"
        self._handles = []

    def watch(self, model: torch.nn.Module, role: str = "policy") -> ComputeMeter:
        """Count `model`'s calls: role `policy` (train, generation or scoring by context) or `reference`."""
        top = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), model)
        self._handles.append(top.register_forward_pre_hook(self._pick_part(role), with_kwargs=True))
        for name, module in model.named_modules():
            tower = bool(re.fullmatch(VISION_TOWER, name))
            if isinstance(module, torch.nn.Linear | torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d):
                self._handles.append(module.register_forward_hook(self._on_layer(tower)))
            elif _is_attention(module):
                self._handles.append(
                    module.register_forward_hook(self._on_attention(tower), with_kwargs=True)
                )
        return self

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @contextlib.contextmanager
    def charged_to(self, part: str):
        """Charge every call inside the block to `part` (the curves' evaluations), and time it."""
        previous, self._forced, began = self._forced, part, time.perf_counter()
        try:
            yield
        finally:
            self._forced = previous
            self.seconds += time.perf_counter() - began

    def total(self) -> float:
        return sum(self.flops[part] for part in PARTS)

    def add(self, part: str, flops: float, tower: bool = False) -> None:
        part = self._forced or part
        self.flops[part] += flops
        if tower and part in PARTS:
            self.flops["vision"] += flops

    def _pick_part(self, role: str):
        def hook(module, args, kwargs):
            if role == "reference":
                self._part = "reference"
            elif torch.is_grad_enabled():
                self._part = "train"
            else:  # generate() passes its KV cache to every forward, prefill included
                self._part = "generation" if kwargs.get("past_key_values") is not None else "scoring"
            head = fused_lm_head_flops(module, kwargs)  # TRL's fused LM head runs outside the module
            if head is not None:
                self.add(self._part, head)

        return hook

    def _charge(self, forward: float, backward: float, output: torch.Tensor, tower: bool) -> None:
        """The forward now; the backward when it runs, from a hook on the output's gradient. So a forward
        that activation checkpointing recomputes in the backward is charged twice, and its backward once,
        as the run computes them (a backward charged with its forward would be counted twice)."""
        part = self._forced or self._part
        self.add(part, forward, tower)
        if backward and isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(lambda grad: self.add(part, backward, tower))

    def _on_layer(self, tower: bool):
        def hook(module, args, output):
            x = args[0]
            weight = module.weight
            if isinstance(module, torch.nn.Linear):
                forward = 2 * weight.numel() * (x.numel() // weight.shape[1])
            else:  # convolution: every output value is a dot product over in_channels/groups x kernel
                forward = 2 * output.numel() * weight[0].numel()
            grads = (x.requires_grad + weight.requires_grad) if torch.is_grad_enabled() else 0
            self._charge(forward, forward * grads, output, tower)

        return hook

    def _on_attention(self, tower: bool):
        def hook(module, args, kwargs, output):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            heads, head_dim = _heads(module)
            if "cu_seqlens" in kwargs:  # a vision tower: attention within each image's patches
                lengths = (kwargs["cu_seqlens"][1:] - kwargs["cu_seqlens"][:-1]).tolist()
                pairs = sum(n * n for n in lengths)
            else:  # (batch, queries, hidden); the keys are the cache after this call's update, or the queries
                batch, queries = hidden.shape[0], hidden.shape[1]
                cache = kwargs.get("past_key_values")
                keys = cache.get_seq_length(module.layer_idx) if cache is not None else queries
                pairs = batch * queries * keys
            forward = 4 * heads * head_dim * pairs
            # the fused kernels' backward recomputes the scores: five matmuls of the forward's two
            self._charge(forward, 2.5 * forward, output[0] if isinstance(output, tuple) else output, tower)

        return hook

    def generation_estimate(
        self, prompt_tokens: float, completion_tokens: float, completions: int, linear: int, attention: int
    ) -> None:
        """Charge generation done outside the watched modules (vLLM): `linear` FLOPs per token (2 x the
        linear layers' weights) and `attention` FLOPs per query-key pair (4 x layers x heads x head_dim), for
        `completions` sequences of the given mean prompt and completion lengths, each prompt prefilled once
        per completion."""
        prompt, completion = prompt_tokens / completions, completion_tokens / completions
        pairs = completions * (prompt * prompt + completion * (prompt + (completion + 1) / 2))
        self.add("generation", linear * (prompt_tokens + completion_tokens) + attention * pairs)


def _is_attention(module: torch.nn.Module) -> bool:
    """A transformers attention module: a language model's (it has a layer index and a KV cache argument) or a
    vision tower's (it takes cu_seqlens)."""
    if not (hasattr(module, "head_dim") and hasattr(module, "config")):
        return False
    parameters = inspect.signature(module.forward).parameters
    return "cu_seqlens" in parameters or ("past_key_values" in parameters and hasattr(module, "layer_idx"))


def _heads(module) -> tuple[int, int]:
    heads = getattr(module, "num_heads", None) or module.config.num_attention_heads
    return heads, module.head_dim


def dimensions(model: torch.nn.Module) -> tuple[int, int]:
    """(FLOPs per token of the language model's linear layers, FLOPs per attention query-key pair), forward:
    the per-token costs `generation_estimate` charges for tokens generated outside the model (vLLM)."""
    linear = attention = 0
    for name, module in model.named_modules():
        if re.fullmatch(VISION_TOWER, name):
            continue
        if isinstance(module, torch.nn.Linear):
            linear += 2 * module.weight.numel()
        elif _is_attention(module):
            heads, head_dim = _heads(module)
            attention += 4 * heads * head_dim
    return linear, attention

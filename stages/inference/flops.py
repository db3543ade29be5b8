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

`ComputeLog` puts the cumulative parts (flops/<part>) and their total (flops/total), summed over processes,
into every step's log, so the curves, the run
metrics, the FLOPs budget and a resumed run all read one count; `summary` turns the last log into the
fields of metrics/<stage>.json.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import re
import time
from collections import defaultdict

import torch
from transformers import PreTrainedModel, TrainerCallback

from stages.modeling import VISION_TOWER

PARTS = ("train", "generation", "reference", "scoring")  # the post-training total
KEY, TOTAL = "flops", "flops/total"  # log-history keys: flops/total and flops/<part>
SECONDS = ("wall_s", "curves_s")


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
            if kwargs.get("fused_lm_head"):
                self._fused_head(module, kwargs)

        return hook

    def _fused_head(self, model, kwargs) -> None:
        """TRL's trainers call the model with `fused_lm_head=True` (trl.trainer.utils.add_fused_lm_head): the
        LM head's matmuls then run in TRL's chunked log-prob kernel on `lm_head.weight`, not through the
        module. Forward: one projection of the scored positions (all shifted positions; on a Triton device
        only the labelled ones). Backward: the kernel recomputes the logits, then the hidden states' and the
        weight's gradients: three more."""
        labels = kwargs.get("shift_labels")
        labels = kwargs["labels"][:, 1:] if labels is None else labels
        on_triton = labels.device.type in ("cuda", "xpu") and importlib.util.find_spec("triton") is not None
        positions = int((labels != -100).sum()) if on_triton else labels.numel()
        weight = model.get_output_embeddings().weight
        forward = 2 * weight.numel() * positions
        backward = (1 + 1 + weight.requires_grad) * forward if torch.is_grad_enabled() else 0
        self.add(self._part, forward + backward)

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


class ComputeLog(TrainerCallback):
    """Writes the run's cumulative cost into every step's log: FLOPs summed over processes (flops,
    flops/<part>), and the seconds of the stage (wall_s, since the stage began at `start`) and of its curve
    evaluations (curves_s). A resumed run starts from the last logged values, restored with the checkpoint,
    so its counts and seconds add up every process that made the model. With `budget`, stops at the first
    step whose total reaches it (grpo.max_flops). With `vllm` (the model's `dimensions`), generation runs
    outside the watched modules and is estimated from the step's logged token counts."""

    def __init__(
        self,
        meter: ComputeMeter,
        accelerator,
        start: float,
        budget: float | None = None,
        vllm: tuple[int, int] | None = None,
        completions_per_step: int = 0,
    ):
        self.meter, self.accelerator, self.start, self.budget = meter, accelerator, start, budget
        self.vllm, self.completions_per_step = vllm, completions_per_step
        self.offset: dict[str, float] = {}
        self.tokens_seen = 0

    def on_train_begin(self, args, state, control, **kwargs):
        last = next((log for log in reversed(state.log_history) if TOTAL in log), {})
        self.offset = {
            k: v for k, v in last.items() if k.startswith(KEY + "/") and k != TOTAL or k in SECONDS
        }
        self.offset.setdefault("wall_s", 0.0)
        self.tokens_seen = last.get("num_tokens", 0)

    def seconds(self) -> dict[str, float]:
        """wall_s and curves_s so far, every process of a resumed run included."""
        wall = self.offset["wall_s"] + time.perf_counter() - self.start
        return {"wall_s": wall, "curves_s": self.offset.get("curves_s", 0.0) + self.meter.seconds}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        if self.vllm is not None and "num_tokens" in logs:
            # TRL logs the tokens of all processes: one process charges them, the reduce adds them up
            completion = logs.get("completions/mean_length", 0.0) * self.completions_per_step
            prompt = max(0.0, logs["num_tokens"] - self.tokens_seen - completion)
            if self.accelerator.is_main_process:
                self.meter.generation_estimate(prompt, completion, self.completions_per_step, *self.vllm)
            self.tokens_seen = logs["num_tokens"]
        names = (*PARTS, "vision", "curves")  # the same on every process: reduce needs equal shapes
        local = torch.tensor([self.meter.flops[n] for n in names], dtype=torch.float64)
        summed = self.accelerator.reduce(local.to(self.accelerator.device), "sum").cpu().tolist()
        counts = {
            f"{KEY}/{n}": self.offset.get(f"{KEY}/{n}", 0.0) + v for n, v in zip(names, summed, strict=True)
        }
        counts[TOTAL] = sum(counts.get(f"{KEY}/{part}", 0.0) for part in PARTS)
        # Trainer.log appended this step's log to the history just before on_log
        state.log_history[-1].update(counts | {k: round(v, 2) for k, v in self.seconds().items()})
        if self.budget is not None and counts[TOTAL] >= self.budget:
            print(f"flops budget: {counts[TOTAL]:.4g} >= {self.budget:.4g} at step {state.global_step}: stop")
            control.should_training_stop = True


def last_counts(log_history: list[dict]) -> dict[str, float]:
    """The cumulative counts of the last step that logged them ({} before the first)."""
    return next(
        (
            {k: v for k, v in log.items() if k.startswith(KEY)}
            for log in reversed(log_history)
            if TOTAL in log
        ),
        {},
    )


def cumulative(log_history: list[dict]) -> dict[int, float]:
    """{step: the run's post-training FLOPs up to that step} (step 0: none)."""
    return {0: 0.0} | {log["step"]: log[TOTAL] for log in log_history if TOTAL in log}


def summary(log_history: list[dict], parameters: int, train_tokens: int, generated_tokens: int = 0) -> dict:
    """The compute fields of metrics/<stage>.json: the total, each part, the paper's first-order figure."""
    counts = last_counts(log_history)
    parts = {name.removeprefix(KEY + "/"): round(v) for name, v in sorted(counts.items()) if name != TOTAL}
    return {
        "flops": round(counts.get(TOTAL, 0.0)),
        "flops_parts": {part: parts.get(part, 0) for part in (*PARTS, "vision", "curves")},
        # SFTvsRL's X = 6·N·D_trained + 2·N·D_generated, for comparison with the paper's axis
        "flops_paper_formula": 6 * parameters * int(train_tokens) + 2 * parameters * int(generated_tokens),
    }

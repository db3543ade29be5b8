"""How a training stage (base, sft, grpo) runs: the TrainingArguments every run shares, the hardware
settings (`train.*`: micro-batches, activation checkpointing, processes) and LoRA."""

from __future__ import annotations

import os

import torch
from transformers import TrainingArguments

from stages.core.params import ParamError, check_int, choice, flag, get, integer, number, per_env
from stages.envs import ENV_NAMES
from stages.inference.models import VISION_TOWER
from stages.training.checkpoints import Checkpoints

# Activation checkpointing's TrainingArguments field: gradient_checkpointing up to transformers 5.17, renamed
# activation_checkpointing later (the range pyproject.toml admits spans both).
CHECKPOINTING = next(
    name
    for name in ("activation_checkpointing", "gradient_checkpointing")
    if name in TrainingArguments.__dataclass_fields__
)


def execution(params, batch_size: int, batch_key: str) -> dict:
    """How a training stage runs on its hardware (the `train` params), validated against this process's
    share of the global batch (`batch_key`) before any model loads: neither setting changes what an
    optimizer step trains on. Keyword arguments of `trainer_defaults`."""
    key = per_env(params, "train.micro_batch_size", choice(params, "env", ENV_NAMES))
    micro = get(params, key)
    # at most the batch: a micro-batch size bounds the sequences of one forward, so a smaller batch is one
    micro = batch_size if micro is None else min(batch_size, check_int(key, micro, minimum=1))
    if batch_size % micro:
        raise ParamError(
            f"{key}={micro} must divide each process's batch, {batch_size} ({batch_key} / "
            "processes); use a divisor of it, or null for no accumulation"
        )
    return dict(
        micro_batch_size=micro, activation_checkpointing=flag(params, "train.activation_checkpointing")
    )


def trainer_defaults(
    checkpoints: Checkpoints,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    micro_batch_size: int | None = None,
    activation_checkpointing: bool = False,
) -> dict:
    """Arguments shared by SFTConfig and GRPOConfig, tuned for small models as well as large ones.

    `batch_size` is this process's share of the global batch; `micro_batch_size` (a divisor of it, see
    `execution`) splits it into micro-batches whose gradients accumulate, so an optimizer step sees the
    same batch on one GPU as on eight. `activation_checkpointing` recomputes activations in the backward
    to save memory (its FLOPs are counted: the meter sees the recomputed forward). TRL's defaults suit
    multi-billion-parameter models on GPUs: activation checkpointing on, bf16 on and a 1e-6 learning rate
    (GRPO). Here bf16 follows the hardware and checkpointing the `train` params. Every step is logged, so
    the curves and gradient-norm statistics cover all steps and a resumed run logs what an uninterrupted
    one does.
    """
    micro = micro_batch_size or batch_size
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return dict(
        **checkpoints.trainer_args(),
        max_steps=steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=batch_size // micro,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        **{CHECKPOINTING: activation_checkpointing},
        logging_steps=1,
        report_to=[],
        dataloader_num_workers=0,
    )


def vision_lr_scale(cfg, visual: bool) -> float:
    """model.vision_lr_scale, validated; 1.0 for a text env, whose model has no vision tower."""
    scale = number(cfg, "model.vision_lr_scale", minimum=0.0, maximum=1.0)
    return scale if visual else 1.0


def per_process(total: int, key: str) -> int:
    """A global batch size split over the processes of `accelerate launch` (WORLD_SIZE; 1 without it)."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if total % processes:
        raise ParamError(f"{key}={total} must be divisible by the number of processes ({processes})")
    return total // processes


def lora_config(cfg, prefix: str, vision_language: bool = False):
    """A peft LoraConfig from `<prefix>.lora.*`, or None for full fine-tuning (validated either way).
    For a VLM the adapters go on the language model: the vision tower's modules are excluded."""
    enabled = flag(cfg, f"{prefix}.lora.enabled")
    rank = integer(cfg, f"{prefix}.lora.rank", minimum=1)
    alpha = number(cfg, f"{prefix}.lora.alpha", minimum=0.0)
    key = f"{prefix}.lora.target_modules"
    targets = get(cfg, key)
    valid_list = isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)
    if targets != "all-linear" and not valid_list:
        raise ParamError(f"{key}={targets!r} must be 'all-linear' or a list of module names")
    if not enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=targets,
        exclude_modules=VISION_TOWER if vision_language else None,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )


def check_lora_targets(config, model: torch.nn.Module, key: str) -> None:
    """ParamError naming `key` if a listed LoRA target matches no module of the model."""
    if config is None or config.target_modules == "all-linear":
        return
    names = [name for name, _ in model.named_modules()]
    for target in sorted(config.target_modules):
        if not any(name == target or name.endswith("." + target) for name in names):
            raise ParamError(f"{key}: the model has no module named {target!r} (e.g. q_proj, v_proj)")

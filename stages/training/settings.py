"""Shared pieces of the training stages (base, sft, grpo): datasets in TRL's conversational format, config
defaults, resumable training, LoRA and the difficulty subsets. The post-training run itself (sft, grpo) is
stages/posttraining.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

import datasets
import torch
from transformers import TrainingArguments

from stages.checkpoints import Checkpoints
from stages.envs import ENV_NAMES
from stages.modeling import VISION_TOWER
from stages.params import ParamError, check_int, choice, get, integer, number, per_env
from stages.storage import read_split

# Keep logs readable; set before datasets builds its first progress bar.
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
datasets.disable_progress_bars()


def conversational(split: datasets.Dataset) -> datasets.Dataset:
    """prompt/completion message lists from generated records, as TRL's trainers take them; VL records keep
    their `image` column (TRL puts the image before the prompt's text), still encoded on disk."""
    messages = datasets.Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p}] for p in split["prompt"]],
            "completion": [[{"role": "assistant", "content": a}] for a in split["answer"]],
        }
    )
    if "image" not in split.column_names:
        return messages
    return datasets.concatenate_datasets([messages, split.select_columns(["image"])], axis=1)


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


def train(trainer, checkpoints: Checkpoints, vision_lr_scale: float = 1.0) -> float:
    """Train, resuming from the last complete checkpoint a killed run left; the seconds it took.

    A VLM's vision tower learns at `vision_lr_scale` times the stage's learning rate (model.vision_lr_scale).
    At the embedded base's 3e-3 the tower from scratch collapses within 25 steps: its outputs grow from norm
    1.3 to 23 while the difference between two ranks shrinks, and its gradient vanishes, so the model never
    learns to read the cards.
    """
    if vision_lr_scale != 1.0:
        scale_vision_lr(trainer, vision_lr_scale)
    resume = checkpoints.last()
    if resume:
        print(f"resuming from {resume}", flush=True)
    return trainer.train(resume_from_checkpoint=resume).metrics["train_runtime"]


def scale_vision_lr(trainer, scale: float) -> None:
    """Give the trainer an optimizer whose vision-tower parameters (Qwen2-VL's `visual`) learn at `scale`
    times the rate of the rest: the trainer's own optimizer (create_optimizer), each group split in two
    before its first step. The learning-rate schedule then scales every group alike."""
    optimizer = trainer.create_optimizer()
    vision = {id(p) for name, p in trainer.model.named_parameters() if re.fullmatch(VISION_TOWER, name)}
    groups = list(optimizer.param_groups)
    optimizer.param_groups.clear()
    for group in groups:
        for in_vision in (False, True):
            params = [p for p in group["params"] if (id(p) in vision) == in_vision]
            if params:
                lr = group["lr"] * (scale if in_vision else 1.0)
                optimizer.add_param_group({**group, "params": params, "lr": lr})


def vision_lr_scale(cfg, visual: bool) -> float:
    """model.vision_lr_scale, validated; 1.0 for a text env, whose model has no vision tower."""
    scale = number(cfg, "model.vision_lr_scale", minimum=0.0, maximum=1.0)
    return scale if visual else 1.0


def flag(cfg, key: str) -> bool:
    value = get(cfg, key)
    if not isinstance(value, bool):
        raise ParamError(f"{key}={value!r} must be true or false")
    return value


def per_process(total: int, key: str) -> int:
    """A global batch size split over the processes of `accelerate launch` (WORLD_SIZE; 1 without it)."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if total % processes:
        raise ParamError(f"{key}={total} must be divisible by the number of processes ({processes})")
    return total // processes


# DC-SFT's difficulty subsets: the buckets of data/splits that each value of `subset` trains on.
SUBSETS = {
    "all": ("easy", "medium", "hard"),
    "easy": ("easy",),
    "medium": ("medium",),
    "hard": ("hard",),
    "easy_medium": ("easy", "medium"),
}
TRAIN = Path("data/generated/train.parquet")
BASE = Path("models/base")
SPLITS = Path("data/splits")


def select_prompts(subset: str, balance: bool, subset_key: str, balance_key: str):
    """The training records of a difficulty subset, and how many came from each bucket.

    `all` without balancing is every training prompt (train.parquet). Otherwise the chosen buckets of
    data/splits are concatenated; `balance` first cuts every bucket to the size of the smallest one (DC-SFT's
    size-balanced difficulty study), keeping the first n in data order so the selection is deterministic.
    """
    if subset == "all" and not balance:
        data = read_split(TRAIN)
        if len(data) == 0:
            raise ParamError(f"{subset_key}='all' selects no prompts: {TRAIN} is empty")
        return data, {"all": len(data)}
    import pyarrow.parquet as pq

    for name in SUBSETS["all"]:
        if not (SPLITS / f"{name}.parquet").is_file():
            raise SystemExit(f"error: {SPLITS / name}.parquet not found; run `dvc repro split` first")
    sizes = {name: pq.read_metadata(SPLITS / f"{name}.parquet").num_rows for name in SUBSETS["all"]}
    if balance:
        smallest = min(sizes, key=sizes.get)
        if sizes[smallest] == 0:
            raise ParamError(
                f"{balance_key}=true cuts every bucket to the smallest, and the {smallest} "
                f"bucket is empty (see metrics/split.json); set {balance_key}=false"
            )
        sizes = dict.fromkeys(sizes, sizes[smallest])
    for name in SUBSETS[subset]:
        if sizes[name] == 0:
            raise ParamError(
                f"{subset_key}={subset!r} needs the {name} bucket, which is empty (see "
                "metrics/split.json); choose another subset or move the split.* thresholds"
            )
    chosen = [read_split(SPLITS / f"{name}.parquet").select(range(sizes[name])) for name in SUBSETS[subset]]
    return datasets.concatenate_datasets(chosen), {name: sizes[name] for name in SUBSETS[subset]}


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


def save_trained(trainer, processor, out: Path) -> None:
    """The trained model as a plain checkpoint like models/base: a LoRA adapter is merged into the weights."""
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)

"""Stage `base`: the starting checkpoint that every post-training run begins from.

    dvc repro base          # or: python -m stages.base

With `model.path: null` (the embedded default) it builds a word-level tokenizer and a small Llama
(text envs) or Qwen2-VL (VL envs) offline and pretrains it with TRL's SFTTrainer on the mixed-rule
corpus, so the model reads the images and follows the rule stated in the prompt, the OOD one included,
as a pretrained model would. With `model.path` set to
a local Hugging Face checkpoint it runs an optional cold-start SFT on ID prompts (DC-SFT) instead.
Writes models/base and metrics/base.json (its wall time). A killed run resumes from its last checkpoint when
run again (stages/training/checkpoints.py).
"""

from __future__ import annotations

import json
import time

from trl import SFTConfig, SFTTrainer

from stages.core.params import ParamError, choice, get, integer, load_params, number, per_env
from stages.core.paths import BASE, CORPUS, TRAIN, stage_metrics
from stages.core.provenance import provenance
from stages.core.storage import atomic_dir, read_split, write_json
from stages.envs import ENV_NAMES
from stages.inference.models import (
    build_model,
    build_processor,
    build_tokenizer,
    build_vl_model,
    check_model_dir,
    count_parameters,
    is_vision_language,
    load_model,
)
from stages.training import checkpoints
from stages.training.data import conversational
from stages.training.launch import launch_processes
from stages.training.run import train
from stages.training.settings import execution, per_process, trainer_defaults, vision_lr_scale


def image_size(data, env: str) -> tuple[int, int]:
    """(width, height) of the corpus images; the generate stage draws them all at one size."""
    corpus = CORPUS
    if "image" not in data.column_names:
        raise ParamError(
            f"env={env}: {corpus} has no images (generated for a text env); run `dvc repro generate`"
        )
    if len(data) == 0:
        raise ParamError(f"{corpus} is empty; raise generate.{env.split('_')[0]}.sizes.corpus above 0")
    return data[0]["image"].size


def main() -> None:
    params = load_params()
    launch_processes("base", params)
    env = choice(params, "env", ENV_NAMES)
    visual = env.endswith("_vl")
    seed = integer(params, "data_seed", minimum=0)
    path = get(params, "model.path")
    steps = integer(params, per_env(params, "base.coldstart_steps" if path else "base.steps", env), minimum=0)
    batch_size = per_process(integer(params, "base.batch_size", minimum=1), "base.batch_size")
    hardware = execution(params, batch_size, "base.batch_size")
    lr = number(params, "base.coldstart_lr" if path else "base.lr", minimum=0.0)
    max_length = integer(params, "model.max_length", minimum=16)

    if path:  # a real checkpoint: cold-start SFT on the ID training prompts
        if is_vision_language(check_model_dir(path, "model.path")) != visual:  # before loading any weights
            kind, want = ("a text-only", "a vision-language") if visual else ("a vision-language", "a text")
            raise ParamError(f"model.path={str(path)!r} is {kind} checkpoint; env={env} needs {want} one")
        processor, model = load_model(path, param="model.path")
        data = read_split(TRAIN)
    else:
        data = read_split(CORPUS)
        tokenizer = build_tokenizer([*data["prompt"], *data["answer"]], vision=visual)
        size = dict(
            hidden_size=integer(params, "model.hidden_size", minimum=8),
            layers=integer(params, "model.layers", minimum=1),
            heads=integer(params, "model.heads", minimum=1),
            max_length=max_length,
            seed=seed,
        )
        if visual:  # a small Qwen2-VL, its processor sized for the env's images
            vision = dict(
                vision_hidden_size=integer(params, "model.vision_hidden_size", minimum=8),
                vision_layers=integer(params, "model.vision_layers", minimum=1),
            )
            model = build_vl_model(tokenizer, **size, **vision)
            processor = build_processor(tokenizer, *image_size(data, env))
        else:
            processor, model = tokenizer, build_model(tokenizer, **size)
    n_params = count_parameters(model)
    print(
        f"base: {'model.path=' + str(path) if path else 'embedded ' + type(model).__name__}, {n_params:,} "
        f"parameters, {steps} steps on {len(data)} examples"
    )

    start = time.perf_counter()
    saves = checkpoints.for_stage("base", params)
    losses = []
    if steps > 0:
        args = SFTConfig(
            **trainer_defaults(
                saves,
                steps=steps,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
                **hardware,
            ),
            max_length=max_length,
        )
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=conversational(data), processing_class=processor
        )
        train(trainer, saves, vision_lr_scale(params, visual))
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        if not trainer.is_world_process_zero():  # train.processes > 1: one process writes
            return
    with atomic_dir(BASE) as out:
        model.save_pretrained(out, safe_serialization=True)
        processor.save_pretrained(out)
        # Only what the same params and seed reproduce goes into the model directory: a wall time there
        # would give every run its own output hash, and every stage after it would miss DVC's run cache.
        info = {
            "parameters": n_params,
            "steps": steps,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
        }
        write_json(out / "base_info.json", info)
    wall_s = round(time.perf_counter() - start, 1)
    made = provenance(get(params, "data_seed"))
    write_json(stage_metrics("base"), info | {"wall_s": wall_s, "provenance": made})
    saves.remove()
    print(f"base: saved {BASE} ({json.dumps(info | {'wall_s': wall_s})})")


if __name__ == "__main__":
    main()

"""One training run of a post-training stage (sft, grpo), from its first line to its metrics file.

Each stage module builds its trainer; `TrainingRun` does the rest the same way for both, top to bottom:

1. `trainer_defaults`: the TrainingArguments every run shares, with its checkpoint folder;
2. `train`: the callbacks that log its compute and draw its scaling curves (stages/training/callbacks.py), a
   VLM's vision tower at its own learning rate, resume from the last checkpoint, train;
3. `finish`, on the main process: the model (all-or-nothing), the per-step logs and curves as dvclive plots,
   metrics/<stage>.json (tokens, gradient norms, FLOPs by part, seconds, provenance); then the checkpoints go.

The base stage shares `train` and `save_trained`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from pathlib import Path

from stages.core.params import get
from stages.core.paths import MODELS, live_dir, stage_metrics
from stages.core.provenance import provenance
from stages.core.storage import atomic_dir, write_csv, write_json
from stages.envs import Env
from stages.inference.flops import ComputeMeter, dimensions
from stages.inference.models import VISION_TOWER
from stages.training import checkpoints
from stages.training.callbacks import ComputeLog, SuccessCurve, curve_points, curve_prompt_rows, summary
from stages.training.checkpoints import Checkpoints
from stages.training.settings import trainer_defaults, vision_lr_scale


class TrainingRun:
    """One run of a training stage (sft, grpo), from its first line to its metrics file.

    `start` is taken when the stage begins, so `wall_s` covers the whole stage (params, model loading,
    training, curves, saving), as score's does; a resumed run adds the seconds of the processes before it, as
    the checkpoint's log history recorded them (time after a killed process's last checkpoint is redone, not
    counted). `cost_s` leaves out the scaling-curve evaluations (`curves_s`): what the method itself costs.
    """

    def __init__(self, stage: str, params, env: Env, seed: int):
        self.start = time.perf_counter()
        self.stage, self.params, self.env, self.seed = stage, params, env, seed
        self.output = MODELS / stage
        self.metrics_path = stage_metrics(stage)
        self.live = live_dir(stage)
        self.meter = ComputeMeter()
        self.checkpoints: Checkpoints | None = None

    def trainer_defaults(self, **kwargs) -> dict:
        self.checkpoints = checkpoints.for_stage(self.stage, self.params)
        return trainer_defaults(self.checkpoints, seed=self.seed, **kwargs)

    def train(
        self,
        trainer,
        processor,
        max_new_tokens: int,
        *,
        budget: float | None = None,
        vllm_generation: bool = False,
        completions_per_step: int = 0,
    ) -> None:
        """Count the run's compute, draw its curves, give a VLM's tower its rate, resume, train."""
        self.meter.watch(trainer.model)
        if getattr(trainer, "ref_model", None) is not None:  # GRPO with beta > 0
            self.meter.watch(trainer.ref_model, role="reference")
        vllm = dimensions(trainer.model) if vllm_generation else None
        self.log = ComputeLog(self.meter, trainer.accelerator, self.start, budget, vllm, completions_per_step)
        trainer.add_callback(self.log)
        self.curve = SuccessCurve(self.env, processor, self.params, max_new_tokens, self.seed, self.meter)
        trainer.add_callback(self.curve)
        self.train_s = train(trainer, self.checkpoints, vision_lr_scale(self.params, self.env.visual))
        self.meter.close()

    def finish(
        self,
        trainer,
        processor,
        *,
        parameters: int,
        train_tokens: int,
        generated_tokens: int = 0,
        extra: Callable[[], dict] = dict,
    ) -> None:
        """On the main process: the model (all-or-nothing), the curves, metrics/<stage>.json; then the
        checkpoints go. `extra()` gives the stage's own metrics."""
        if not trainer.is_world_process_zero():
            return
        with atomic_dir(self.output) as out:
            save_trained(trainer, processor, out)
        history = trainer.state.log_history  # what the callbacks logged, read back
        points, per_prompt = curve_points(history), curve_prompt_rows(history, self.curve.sets)
        compute = summary(history, parameters, train_tokens, generated_tokens)
        write_dvclive(trainer, self.live, points)
        # after dvclive, which cleans its folder when it starts; a header alone when the curves are off
        columns = ["step", "flops", "set", "id", "unit", "success"]
        write_csv(self.live / "curve_per_prompt.csv", per_prompt, columns)
        metrics = run_metrics(
            trainer,
            train_s=self.train_s,
            parameters=parameters,
            train_tokens=train_tokens,
            generated_tokens=generated_tokens,
        )
        metrics |= compute
        metrics |= extra()
        seconds = self.log.seconds()
        metrics |= {key: round(value, 1) for key, value in seconds.items()}
        metrics["cost_s"] = round(seconds["wall_s"] - seconds["curves_s"], 1)
        metrics["provenance"] = provenance(get(self.params, "data_seed"))
        write_json(self.metrics_path, metrics)
        self.checkpoints.remove()
        print(f"{self.stage}: saved {self.output}; {metrics}")


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


def save_trained(trainer, processor, out: Path) -> None:
    """The trained model as a plain checkpoint like models/base: a LoRA adapter is merged into the weights."""
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


def write_dvclive(trainer, directory: Path, points: list[dict]) -> None:
    """Per-step logs (loss, grad_norm, learning_rate, reward, ...) to a dvclive folder, from the main process,
    and the scaling-curve `points` (success against FLOPs, stages/training/callbacks.py) as
    plots/custom/success_vs_flops.json.

    Written from the trainer's log history after training rather than by a live callback: a resumed run
    restores that history from its checkpoint, so its curves match an uninterrupted run's. dvcyaml=None and
    save_dvc_exp=False: otherwise dvclive rewrites dvc.yaml and creates hidden experiments; the plots are
    declared in dvc.yaml instead.
    """
    if not trainer.is_world_process_zero():
        return
    from dvclive import Live
    from dvclive.plots import Metric
    from dvclive.utils import standardize_metric_name

    with Live(str(directory), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        live.log_params(trainer.args.to_dict())
        for log in trainer.state.log_history:
            live.step = log["step"]
            for key, value in log.items():
                if key != "step" and Metric.could_log(value):
                    live.log_metric(standardize_metric_name(key, "dvclive.huggingface"), value)
        if points:
            live.log_plot("success_vs_flops", points, x="flops", y=["id", "ood_rule"], template="linear")
        else:  # curves.eval_every: 0; the file is a declared output all the same
            custom = directory / "plots" / "custom"
            custom.mkdir(parents=True, exist_ok=True)
            (custom / "success_vs_flops.json").write_text("[]\n")


def series(trainer, key: str) -> list[float]:
    """One value per logged step (logging_steps=1) of a metric from the trainer's log history.

    The run summary that ends the history (it holds `train_loss`) is left out.
    """
    return [log[key] for log in trainer.state.log_history if key in log and "train_loss" not in log]


def head_tail_means(values: list[float], fraction: float = 0.1) -> tuple[float | None, float | None]:
    """Mean of the first and of the last `fraction` of a curve (at least one point each)."""
    if not values:
        return None, None
    n = max(1, math.ceil(len(values) * fraction))
    return round(sum(values[:n]) / n, 4), round(sum(values[-n:]) / n, 4)


def run_metrics(
    trainer, *, train_s: float, parameters: int, train_tokens: int, generated_tokens: int = 0
) -> dict:
    """Tokens and gradient statistics of a finished run (its compute and seconds: callbacks.summary).

    Trained tokens are the non-padding prompt and completion tokens that went through forward and backward.
    """
    grad_norms = [g for g in series(trainer, "grad_norm") if math.isfinite(g)]
    losses = series(trainer, "loss")
    return {
        "train_s": round(train_s, 1),
        "steps": trainer.state.global_step,
        "parameters": parameters,
        "train_tokens": int(train_tokens),
        "generated_tokens": int(generated_tokens),
        "grad_norm_mean": round(sum(grad_norms) / len(grad_norms), 4) if grad_norms else None,
        "grad_norm_max": round(max(grad_norms), 4) if grad_norms else None,
        "loss_first": round(losses[0], 4) if losses else None,
        "loss_last": round(losses[-1], 4) if losses else None,
    }

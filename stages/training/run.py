"""The run of a post-training stage (sft, grpo), from its first line to its metrics file.

Each stage module builds its trainer; `TrainingRun` does the rest the same way for both: it counts the run's
compute (stages/compute.py), draws its scaling curves (stages/curves.py), gives a VLM's vision tower its own
learning rate, resumes from the last checkpoint, trains, and ends with save -> curves -> metrics -> cleanup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from stages import checkpoints
from stages.checkpoints import Checkpoints
from stages.compute import ComputeLog, ComputeMeter, dimensions, summary
from stages.curves import SuccessCurve, curve_points, curve_prompt_rows
from stages.envs import Env
from stages.params import get
from stages.provenance import provenance
from stages.storage import atomic_dir, write_csv, write_json
from stages.train_logging import run_metrics, write_curves
from stages.training import save_trained, train, trainer_defaults, vision_lr_scale


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
        self.output = Path(f"models/{stage}")
        self.metrics_path = Path(f"metrics/{stage}.json")
        self.live = Path(f"metrics/{stage}_live")
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
        history = trainer.state.log_history
        write_curves(trainer, self.live, curve_points(history))
        # after dvclive, which cleans its folder when it starts; a header alone when the curves are off
        columns = ["step", "flops", "set", "id", "unit", "success"]
        write_csv(self.live / "curve_per_prompt.csv", curve_prompt_rows(history, self.curve.sets), columns)
        metrics = run_metrics(
            trainer,
            train_s=self.train_s,
            parameters=parameters,
            train_tokens=train_tokens,
            generated_tokens=generated_tokens,
        )
        metrics |= summary(history, parameters, train_tokens, generated_tokens)
        metrics |= extra()
        seconds = self.log.seconds()
        metrics |= {key: round(value, 1) for key, value in seconds.items()}
        metrics["cost_s"] = round(seconds["wall_s"] - seconds["curves_s"], 1)
        metrics["provenance"] = provenance(get(self.params, "data_seed"))
        write_json(self.metrics_path, metrics)
        self.checkpoints.remove()
        print(f"{self.stage}: saved {self.output}; {metrics}")

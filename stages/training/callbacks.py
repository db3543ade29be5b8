"""Scaling curves: ID and OOD success of the model under training, against post-training FLOPs.

The SFTvsRL paper compares SFT and RL along training, at matched compute, not only at the end. Every
`curves.eval_every` steps (and at step 0, the starting model) the `sft` and `grpo` stages sample
`curves.samples` answers at `curves.temperature` to the first `curves.prompts` prompts of eval_id and
eval_ood_rule with the rollout engine and log their mean success, and every prompt's; after training,
`curve_points` pairs each point with the cumulative FLOPs of the run so far (stages/compute.py, which logs
them every step) and dvclive writes them, so `dvc plots show` draws SFT and GRPO on one axis.
`curve_prompt_rows` gives every prompt's success at every point (metrics/<stage>_live/curve_per_prompt.csv),
with its independent unit, so the claims' matched-compute rows get an interval over prompts too.

Points are stored in the trainer's log history, so a resumed run keeps the points made before it was killed.
The evaluations are charged to the `curves` part of the compute, outside the run's total, and run under
their own random streams (CPU and every GPU), so they change nothing in the training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback

from stages.compute import ComputeMeter, cumulative
from stages.envs import Env, independent_unit
from stages.params import integer, number
from stages.rollout import HFEngine, rollout
from stages.storage import read_records

DATA = Path("data/generated")
SETS = {"id": "eval_id", "ood_rule": "eval_ood_rule"}
PREFIX = "curve/"  # log-history keys of the curve points: curve/id, curve/ood_rule
PER_PROMPT = "curve_prompts/"  # and of every prompt's success at the point: curve_prompts/id, ...


class SuccessCurve(TrainerCallback):
    """Evaluates the model under training at step 0 and every `every` steps, on the main process."""

    def __init__(self, env: Env, processor, params, max_new_tokens: int, seed: int, meter: ComputeMeter):
        self.every = integer(params, "curves.eval_every", minimum=0)
        prompts = integer(params, "curves.prompts", minimum=1)
        self.temperature = number(params, "curves.temperature", minimum=0.0)
        self.samples = integer(params, "curves.samples", minimum=1)
        self.env, self.processor, self.max_new_tokens, self.seed = env, processor, max_new_tokens, seed
        self.meter = meter
        self.sets = {}
        if self.every:
            for name, split in SETS.items():
                self.sets[name] = read_records(DATA / f"{split}.parquet", limit=prompts)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:  # a resumed run has its earlier points in the restored log history
            self.evaluate(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and (state.global_step % self.every == 0 or state.global_step == state.max_steps):
            self.evaluate(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        # a run stopped early (grpo.max_flops) ends with a point too
        points = [log["step"] for log in state.log_history if PREFIX + "id" in log]
        if state.global_step not in points:
            self.evaluate(state, model)

    def evaluate(self, state, model) -> None:
        if not self.every or not state.is_world_process_zero:
            return
        point = {"step": state.global_step}
        # The engine seeds torch (CPU and CUDA) for reproducible samples; fork_rng on every device keeps the
        # training's random streams intact.
        devices = list(range(torch.cuda.device_count()))
        with torch.random.fork_rng(devices=devices), self.meter.charged_to("curves"):
            engine = HFEngine(model, self.processor, batch_size=len(self.sets["id"]), seed=self.seed)
            for name, records in self.sets.items():
                episodes = rollout(
                    engine, self.env, records, self.samples, self.temperature, 1.0, self.max_new_tokens
                )
                wins = [sum(e.success for e in answers) for answers in episodes]
                point[PREFIX + name] = round(sum(wins) / (len(records) * self.samples), 4)
                point[PER_PROMPT + name] = [round(w / self.samples, 4) for w in wins]
        model.train()
        state.log_history.append(point)
        print(f"curve: { {k: v for k, v in point.items() if not k.startswith(PER_PROMPT)} }", flush=True)


def curve_points(log_history: list[dict]) -> list[dict]:
    """The curve points, each with the run's cumulative post-training FLOPs at its step (compute.py)."""
    flops, points = cumulative(log_history), []
    for log in log_history:
        if PREFIX + "id" in log:
            step = max(s for s in flops if s <= log["step"])
            success = {key.removeprefix(PREFIX): v for key, v in log.items() if key.startswith(PREFIX)}
            points.append({"step": log["step"], "flops": round(flops[step]), **success})
    return points


def curve_prompt_rows(log_history: list[dict], sets: dict[str, list[dict]]) -> list[dict]:
    """Every prompt's success at every curve point: step, FLOPs, eval set, prompt id and unit."""
    flops, rows = cumulative(log_history), []
    for log in log_history:
        if PREFIX + "id" not in log:
            continue
        step = max(s for s in flops if s <= log["step"])
        for name, records in sets.items():
            for record, success in zip(records, log.get(PER_PROMPT + name, []), strict=False):
                at = {"step": log["step"], "flops": round(flops[step]), "set": name}
                rows.append(at | {"id": record["id"], "unit": independent_unit(record), "success": success})
    return rows

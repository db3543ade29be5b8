"""Scaling curves: ID and OOD success of the model under training, against post-training FLOPs.

The SFTvsRL paper compares SFT and RL along training, at matched compute, not only at the end. Every
`curves.eval_every` steps (and at step 0, the starting model) the `sft` and `grpo` stages sample the first
`curves.prompts` prompts of eval_id and eval_ood_rule with the rollout engine and log their success; after
training, `write_curve` pairs each point with the cumulative FLOPs of the run so far (6·N per trained token
plus 2·N per generated token) and writes it with dvclive, so `dvc plots show` draws SFT and GRPO on one axis.

Points are stored in the trainer's log history, so a resumed run keeps the points made before it was killed.
`FlopsBudget` stops a run once it has spent a given compute (grpo.max_flops), with a last point there.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback

from stages.envs import Env
from stages.params import integer, number
from stages.rollout import HFEngine, rollout
from stages.storage import read_records

DATA = Path("data/generated")
SETS = {"id": "eval_id", "ood_rule": "eval_ood_rule"}
PREFIX = "curve/"  # log-history keys of the curve points: curve/id, curve/ood_rule


class SuccessCurve(TrainerCallback):
    """Evaluates the model under training at step 0 and every `every` steps, on the main process."""

    def __init__(self, env: Env, processor, params, max_new_tokens: int, seed: int):
        self.every = integer(params, "curves.eval_every", minimum=0)
        prompts = integer(params, "curves.prompts", minimum=1)
        self.temperature = number(params, "curves.temperature", minimum=0.0)
        self.samples = integer(params, "curves.samples", minimum=1)
        self.env, self.processor, self.max_new_tokens, self.seed = env, processor, max_new_tokens, seed
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
        # a run stopped early (FlopsBudget) ends with a point too
        points = [log["step"] for log in state.log_history if PREFIX + "id" in log]
        if state.global_step not in points:
            self.evaluate(state, model)

    def evaluate(self, state, model) -> None:
        if not self.every or not state.is_world_process_zero:
            return
        point = {"step": state.global_step}
        # The engine seeds torch for reproducible samples; fork_rng keeps the training's random stream intact.
        with torch.random.fork_rng(devices=[]):
            engine = HFEngine(model, self.processor, batch_size=len(self.sets["id"]), seed=self.seed)
            for name, records in self.sets.items():
                episodes = rollout(
                    engine, self.env, records, self.samples, self.temperature, 1.0, self.max_new_tokens
                )
                wins = sum(e.success for answers in episodes for e in answers)
                point[PREFIX + name] = round(wins / (len(records) * self.samples), 4)
        model.train()
        state.log_history.append(point)
        print(f"curve: {point}", flush=True)


def cumulative_flops(log_history: list[dict], parameters: int, completions_per_step: int = 0) -> dict:
    """{step: the run's post-training FLOPs up to that step}, from its per-step logs (step 0: none).

    Trained tokens are the running `num_input_tokens_seen` (SFT) or `num_tokens` (GRPO) of the step's log;
    generated tokens (GRPO) add up `completions/mean_length` x completions per step over the steps so far.
    """
    flops, generated = {0: 0}, 0.0
    for log in log_history:
        if "loss" in log:
            trained = int(log.get("num_input_tokens_seen", log.get("num_tokens", 0)))
            generated += log.get("completions/mean_length", 0.0) * completions_per_step
            flops[log["step"]] = 6 * parameters * trained + 2 * parameters * round(generated)
    return flops


def curve_points(log_history: list[dict], parameters: int, completions_per_step: int = 0) -> list[dict]:
    """The curve points, each with the run's cumulative FLOPs at its step."""
    flops, points = cumulative_flops(log_history, parameters, completions_per_step), []
    for log in log_history:
        if PREFIX + "id" in log:
            step = max(s for s in flops if s <= log["step"])
            success = {key.removeprefix(PREFIX): v for key, v in log.items() if key.startswith(PREFIX)}
            points.append({"step": log["step"], "flops": flops[step], **success})
    return points


class FlopsBudget(TrainerCallback):
    """Stops training at the first step whose cumulative post-training FLOPs reach `budget` (grpo.max_flops).

    The learning-rate schedule still spans every configured step, so the model is the one a full run has at
    that compute: what a comparison at matched FLOPs reads off the curves, for less time.
    """

    def __init__(self, budget: float, parameters: int, completions_per_step: int):
        self.budget, self.parameters, self.completions_per_step = budget, parameters, completions_per_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:  # the step's log is already in the history
            flops = cumulative_flops(state.log_history, self.parameters, self.completions_per_step)
            spent = flops[max(flops)]
            if spent >= self.budget:
                print(f"flops budget: {spent:.4g} >= {self.budget:.4g} at step {state.global_step}; stopping")
                control.should_training_stop = True

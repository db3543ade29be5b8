"""What a training run writes into its log history at every step, and reads back at the end.

Two TrainerCallbacks, both added by `TrainingRun.train` (stages/training/run.py):

- `ComputeLog`: the run's cumulative FLOPs by part (flops/<part>, flops/total; counted by
  stages/inference/flops.py's ComputeMeter, summed over processes) and its seconds (wall_s, curves_s) in every
  step's log; with a budget (grpo.max_flops) it stops the run. `summary` turns the last log into the compute
  fields of metrics/<stage>.json.
- `SuccessCurve`: the scaling curves. The SFTvsRL paper compares SFT and RL along training, at matched
  compute, not only at the end. Every `curves.eval_every` steps (and at step 0, the starting model) the
  callback samples `curves.samples` answers at `curves.temperature` to the first `curves.prompts` prompts of
  eval_id and eval_ood_rule and logs their mean success, and every prompt's. `curve_points` pairs each point
  with the run's cumulative FLOPs so far, so `dvc plots show` draws SFT and GRPO on one axis;
  `curve_prompt_rows` gives every prompt's success at every point (metrics/<stage>_live/curve_per_prompt.csv),
  with its independent unit, so the claims' matched-compute rows get an interval over prompts too. The
  evaluations are charged to the `curves` part of the compute, outside the run's total, and run under their
  own random streams (CPU and every GPU), so they change nothing in the training.

Everything lives in the trainer's log history, so a resumed run, whose history comes back with its
checkpoint, keeps the counts, seconds and points made before it was killed.
"""

from __future__ import annotations

import time

import torch
from transformers import TrainerCallback

from stages.core.params import integer, number
from stages.core.paths import EVAL_SETS, split_file
from stages.core.storage import read_records
from stages.envs import Env, independent_unit
from stages.inference.flops import KEY, PARTS, TOTAL, ComputeMeter
from stages.inference.rollout import HFEngine, rollout

SECONDS = ("wall_s", "curves_s")
CURVE_SETS = ("id", "ood_rule")  # the eval sets of the curves (core/paths.py EVAL_SETS)
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
            for name in CURVE_SETS:
                self.sets[name] = read_records(split_file(EVAL_SETS[name]), limit=prompts)

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

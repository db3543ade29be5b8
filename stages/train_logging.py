"""Training logs and run metrics shared by the `sft` and `grpo` stages.

Per-step curves go to a dvclive directory under metrics/ (declared as plots in dvc.yaml); the run summary
(tokens, gradient norms; FLOPs and seconds from stages/compute.py) goes to metrics/<stage>.json. Only the
main process writes.
"""

from __future__ import annotations

import math
from pathlib import Path


def write_curves(trainer, directory: Path, points: list[dict]) -> None:
    """Per-step logs (loss, grad_norm, learning_rate, reward, ...) to a dvclive folder, from the main process,
    and the scaling-curve `points` (success against FLOPs, stages/curves.py) as
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
    """Tokens and gradient statistics of a finished run (its compute and seconds: stages/compute.py).

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

"""Stage `report`: the summary table and plot data from metrics files, and the plots DVC renders."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, assert_one_line_error, run


def section(id_, ood):
    return {
        "id": {"greedy_success": id_, "mean_success": id_, "pass_at_k": 1.0},
        "ood_rule": {"greedy_success": ood, "mean_success": ood, "pass_at_k": 1.0},
    }


EVALS = {"base": section(0.5, 0.4), "sft": section(0.7, 0.1), "grpo": section(0.6, 0.45)}
TRAINING = {
    "sft": {
        "wall_s": 30.0,
        "train_tokens": 1000,
        "flops": 6e9,
        "grad_norm_mean": 1.5,
        "grad_norm_max": 4.0,
        "train_prompts": 200,
    },
    "grpo": {
        "wall_s": 120.0,
        "train_tokens": 2000,
        "generated_tokens": 5000,
        "flops": 2.2e10,
        "grad_norm_mean": 0.5,
        "grad_norm_max": 1.0,
        "train_prompts": 160,
    },
}


def make_metrics(path, evals=EVALS, training=TRAINING, params=None):
    """A directory holding params.yaml and the metrics files the report stage reads."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", path / "params.yaml")
    (path / "metrics" / "eval").mkdir(parents=True)
    for model, sections in evals.items():
        result = {"model": model, "env": "gp_l", "k": 8, "samples": 8, "temperature": 1.0, **sections}
        (path / "metrics" / "eval" / f"{model}.json").write_text(json.dumps(result))
    for model, metrics in training.items():
        (path / "metrics" / f"{model}.json").write_text(json.dumps(metrics))
    if params:
        from conftest import set_params

        set_params(path, params)
    return path


def report(cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "stages.report"], cwd=cwd, env=env, capture_output=True, text=True
    )


def table_rows(markdown: str) -> dict[str, list[str]]:
    """The first table's rows by model name."""
    rows = {}
    for line in markdown.split("All eval metrics")[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("base", "sft", "grpo"):
            rows[cells[0]] = cells
    return rows


def test_report_tabulates_models_with_deltas_and_cost(tmp_path):
    repo = make_metrics(tmp_path)
    assert report(repo).returncode == 0
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    sft = summary["models"]["sft"]
    assert (
        sft["id"] == 0.7
        and sft["delta_id"] == pytest.approx(0.2)
        and sft["delta_ood_rule"] == pytest.approx(-0.3)
    )
    assert sft["flops"] == 6e9 and summary["models"]["base"]["flops"] == 0
    rows = table_rows((repo / "metrics" / "summary.md").read_text())
    #          model   ID      Δ ID      OOD     Δ OOD     prompts  FLOPs    wall    grad norm
    assert rows["sft"] == ["sft", "0.700", "+0.200", "0.100", "-0.300", "200", "6e+09", "30.0", "1.50 / 4.00"]
    assert rows["grpo"][3:5] == ["0.450", "+0.050"]
    assert rows["base"][1:5] == ["0.500", "", "0.400", ""]
    with (repo / "metrics" / "report" / "grpo.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["model"] == "grpo" and float(row["ood_rule"]) == 0.45 and float(row["flops"]) == 2.2e10


def test_stages_that_have_not_run_show_a_dash(tmp_path):
    repo = make_metrics(tmp_path, evals={k: EVALS[k] for k in ("base", "sft")}, training={})
    assert report(repo).returncode == 0
    rows = table_rows((repo / "metrics" / "summary.md").read_text())
    assert set(rows["grpo"][1:]) == {"-", "- / -"}
    assert rows["sft"][1:5] == ["0.700", "+0.200", "0.100", "-0.300"] and rows["sft"][5:8] == ["-"] * 3
    assert "grpo" not in json.loads((repo / "metrics" / "summary.json").read_text())["models"]
    assert (repo / "metrics" / "report" / "grpo.csv").read_text() == "model,id,ood_rule,flops\n"


def test_visual_eval_set_gets_its_own_columns(tmp_path):
    evals = {model: {**s, "ood_visual": s["ood_rule"]} for model, s in EVALS.items()}
    repo = make_metrics(tmp_path, evals=evals)
    assert report(repo).returncode == 0
    markdown = (repo / "metrics" / "summary.md").read_text()
    assert "| OOD visual | Δ OOD visual |" in markdown
    assert json.loads((repo / "metrics" / "summary.json").read_text())["models"]["sft"]["ood_visual"] == 0.1


@pytest.mark.parametrize(
    ("evals", "params", "named"),
    [
        ({"sft": EVALS["sft"]}, None, "evaluate@base"),
        (EVALS, {"report.metric": "route_success"}, "report.metric"),
    ],
)
def test_bad_input_stops_with_one_line(tmp_path, evals, params, named):
    repo = make_metrics(tmp_path, evals=evals, params=params)
    result = report(repo)
    assert_one_line_error(result, named)
    assert not (repo / "metrics" / "summary.md").exists()


@pytest.mark.slow
def test_dvc_renders_the_declared_plots(tmp_path):
    repo = make_metrics(tmp_path / "repo")
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    assert report(repo).returncode == 0
    (repo / "metrics" / "score_hist.csv").write_text("passes,prompts\n0,3\n1,5\n2,1\n")
    shown = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)["data"]
    titles = {
        title: plots for title, plots in shown.items() if plots and plots[0]["content"]["data"]["values"]
    }
    assert any("ID vs OOD" in title for title in titles), list(shown)
    assert any("FLOPs" in title for title in titles), list(shown)
    run(["dvc", "plots", "show"], repo)
    assert (repo / "dvc_plots" / "index.html").is_file()

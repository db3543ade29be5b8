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


def visual_section(id_, ood, visual, recognition):
    """The sections of a VL env: OOD visual too, and recognition (greedy, sampled) in each."""
    sections = {**section(id_, ood), "ood_visual": section(visual, visual)["id"]}
    for name, (greedy, sampled) in zip(sections, recognition, strict=True):
        sections[name].update(recognition=greedy, recognition_sampled=sampled)
    return sections


VL_EVALS = {
    "base": visual_section(0.5, 0.4, 0.3, [(0.8, 0.7), (0.75, 0.65), (0.5, 0.4)]),
    "sft": visual_section(0.7, 0.1, 0.2, [(0.85, 0.8), (0.6, 0.5), (0.3, 0.25)]),
    "grpo": visual_section(0.6, 0.45, 0.35, [(0.9, 0.85), (0.8, 0.75), (0.6, 0.55)]),
}


def make_metrics(path, evals=EVALS, training=TRAINING, params=None, env="gp_l"):
    """A directory holding params.yaml and the metrics files the report stage reads."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", path / "params.yaml")
    (path / "metrics" / "eval").mkdir(parents=True)
    for model, sections in evals.items():
        result = {"model": model, "env": env, "k": 8, "samples": 8, "temperature": 1.0, **sections}
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


def read_csv(path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


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


def test_text_env_report_has_no_recognition_and_header_only_recognition_files(tmp_path):
    repo = make_metrics(tmp_path)
    assert report(repo).returncode == 0
    markdown = (repo / "metrics" / "summary.md").read_text()
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert "recognition" not in markdown and "recognition" not in json.dumps(summary)
    assert "| model | ID | Δ ID | OOD rule | Δ OOD rule | train prompts |" in markdown
    for model in ("base", "sft", "grpo"):
        assert (
            (repo / "metrics" / "report" / f"{model}.csv").read_text().startswith("model,id,ood_rule,flops\n")
        )
        # The recognition plots read these: a header and no rows, so they render empty without a warning.
        recognition = (repo / "metrics" / "report" / "recognition" / f"{model}.csv").read_text()
        assert (
            recognition
            == "model,id,recognition_id,ood_rule,recognition_ood_rule,ood_visual,recognition_ood_visual\n"
        )


@pytest.mark.parametrize(
    ("metric", "key"),
    [
        ("mean_success", "recognition_sampled"),
        ("greedy_success", "recognition"),
        ("pass_at_k", "recognition_sampled"),
    ],
)
def test_vl_report_adds_ood_visual_and_recognition_of_the_same_answers(tmp_path, metric, key):
    repo = make_metrics(tmp_path, evals=VL_EVALS, env="gp_vl", params={"report.metric": metric})
    assert report(repo).returncode == 0
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert summary["recognition"] == key
    grpo = summary["models"]["grpo"]
    for name in ("id", "ood_rule", "ood_visual"):
        assert grpo[f"recognition_{name}"] == VL_EVALS["grpo"][name][key]
        assert grpo[name] == VL_EVALS["grpo"][name][metric]
    markdown = (repo / "metrics" / "summary.md").read_text()
    assert f"Recognition (`{key}`)" in markdown
    columns = "| OOD visual | Δ OOD visual | ID recognition | OOD rule recognition | OOD visual recognition |"
    assert columns + " train prompts |" in markdown
    rows = table_rows(markdown)
    expected = [format(VL_EVALS["sft"][name][key], ".3f") for name in ("id", "ood_rule", "ood_visual")]
    assert rows["sft"][7:10] == expected and rows["sft"][10] == "200"
    assert rows["base"][5:7] == [format(VL_EVALS["base"]["ood_visual"][metric], ".3f"), ""]
    # The all-metrics table lists both recognitions, greedy and sampled.
    assert "| recognition | recognition_sampled |" in markdown.split("All eval metrics")[1]
    (row,) = read_csv(repo / "metrics" / "report" / "grpo.csv")
    assert list(row) == [
        "model",
        "id",
        "ood_rule",
        "ood_visual",
        "recognition_id",
        "recognition_ood_rule",
        "recognition_ood_visual",
        "flops",
    ]
    assert float(row["recognition_ood_visual"]) == VL_EVALS["grpo"]["ood_visual"][key]
    (row,) = read_csv(repo / "metrics" / "report" / "recognition" / "sft.csv")
    assert float(row["ood_visual"]) == VL_EVALS["sft"]["ood_visual"][metric]
    assert float(row["recognition_ood_visual"]) == VL_EVALS["sft"]["ood_visual"][key]


def test_vl_models_that_have_not_run_show_a_dash_for_recognition(tmp_path):
    repo = make_metrics(tmp_path, evals={k: VL_EVALS[k] for k in ("base", "sft")}, training={}, env="gp_vl")
    assert report(repo).returncode == 0
    rows = table_rows((repo / "metrics" / "summary.md").read_text())
    assert rows["grpo"][7:10] == ["-"] * 3 and rows["sft"][7:10] != ["-"] * 3
    # An evaluated model is on the recognition plot even before its training metrics exist.
    assert len(read_csv(repo / "metrics" / "report" / "recognition" / "sft.csv")) == 1
    assert read_csv(repo / "metrics" / "report" / "recognition" / "grpo.csv") == []
    assert read_csv(repo / "metrics" / "report" / "sft.csv") == []  # the FLOPs plots need training metrics


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
@pytest.mark.parametrize(("env", "evals"), [("gp_l", EVALS), ("gp_vl", VL_EVALS)])
def test_dvc_renders_the_declared_plots(tmp_path, env, evals):
    repo = make_metrics(tmp_path / "repo", evals=evals, env=env)
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    assert report(repo).returncode == 0
    (repo / "metrics" / "score_hist.csv").write_text("passes,prompts\n0,3\n1,5\n2,1\n")
    shown = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)
    # The training stages' plots have no files here, nor the benchmark plot (no benchmarks ran); the report's
    # plots must read theirs without an error (a field missing from a file, as recognition_id from a text
    # env's CSV, would be one).
    optional = ("_live/", "metrics/report/benchmarks/")
    reported = [e for e in shown.get("errors", []) if not any(o in e.get("source", "") for o in optional)]
    assert not reported, reported
    titles = {
        title: plots
        for title, plots in shown["data"].items()
        if plots and plots[0]["content"]["data"]["values"]
    }
    assert any("ID vs OOD" in title for title in titles), list(shown["data"])
    assert any("FLOPs" in title for title in titles), list(shown["data"])
    recognition = [title for title in shown["data"] if "recognition" in title]
    assert len(recognition) == 3, list(shown["data"])
    if env == "gp_vl":
        (visual,) = [title for title in recognition if title.startswith("OOD-visual")]
        points = titles[visual][0]["content"]["data"]["values"]
        assert {point["model"] for point in points} == {"base", "sft", "grpo"}
    else:
        assert not set(recognition) & set(titles)  # text envs: empty recognition plots
    result = run(["dvc", "plots", "show"], repo)
    assert "could not find provided field" not in result.stderr + result.stdout
    assert (repo / "dvc_plots" / "index.html").is_file()

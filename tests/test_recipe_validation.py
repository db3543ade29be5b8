"""stages/recipe.py's checks, in this process: every key of a recipe must be a param of params.yaml, and every
value of its default's kind (tests/test_recipe.py runs the command itself)."""

from __future__ import annotations

import pytest
from conftest import REPO
from omegaconf import OmegaConf

from stages import recipe
from stages.core.params import ParamError

DEFAULTS = OmegaConf.load(REPO / "params.yaml")


def check(settings: dict) -> None:
    recipe.check(recipe.flatten(settings), DEFAULTS, "r.yaml")


@pytest.mark.parametrize(
    "settings",
    [
        {"base": {"steps": {"gp_l": 100}}},  # one env's entry of a per-env param
        {"base": {"steps": 100}},  # one value for every env of a per-env param
        {"split": {"easy_min": {"gp_l": 6}}},  # a number for an entry whose default is null
        {"split": {"easy_min": {"gp_vl": None}}},  # and null for one whose default is a number
        {"grpo": {"max_flops": 1.0e18}},  # a number for a null default (an optional number)
        {"model": {"path": "/models/x"}},  # a string for a null default (an optional path)
        {"grpo": {"lora": {"enabled": True, "rank": 16}}, "sft": {"lr": 1}},  # an int is a number
    ],
)
def test_settings_of_the_defaults_kind_pass(settings):
    check(settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"base": {"steps": {"gp_x": 100}}}, "base.steps.gp_x is not a param"),  # not an env
        ({"sft": {"lr": {"gp_l": 1.0e-5}}}, "sft.lr.gp_l is not a param"),  # sft.lr is not per env
        ({"sft": {"lrr": 1.0e-5}}, "sft.lrr is not a param"),
        ({"sft": {"lr": True}}, "sft.lr=True must be a number"),  # a bool is no number
        ({"grpo": {"filter_groups": 1}}, "grpo.filter_groups=1 must be a bool"),  # nor a number a bool
        ({"sft": {"lr": "fast"}}, "sft.lr='fast' must be a number"),
        ({"sft": {"lr": [1.0e-5]}}, "must be a number"),
        ({"model": {"path": ["/models/a"]}}, "model.path=['/models/a'] must be a null"),  # a list for a path
        ({"grpo": {"filter_groups": None}}, "grpo.filter_groups=None must be a bool"),
    ],
)
def test_a_setting_of_another_kind_names_the_key_and_the_kind(settings, message):
    with pytest.raises(ParamError, match=message.replace("[", r"\[").replace(".", r"\.")):
        check(settings)


def test_a_scalar_for_a_section_that_is_not_per_env_is_refused():
    with pytest.raises(ParamError, match="grpo.lora"):
        check({"grpo": {"lora": 4}})


def test_a_missing_or_malformed_recipe_file_stops(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # params.yaml
    with pytest.raises(ParamError, match="recipe .*nope.yaml.* not found"):
        recipe.overrides(tmp_path / "nope.yaml", ["model.path=/m"])
    listed = tmp_path / "list.yaml"
    listed.write_text("- sft.lr\n")
    with pytest.raises(ParamError, match="must be a mapping"):
        recipe.overrides(listed, ["model.path=/m"])


def test_the_callers_settings_follow_the_recipes_and_replace_them(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    path = tmp_path / "r.yaml"
    path.write_text("sft:\n  lr: 1.0e-05\n  steps: {gp_l: 7}\nmodel:\n  path: /models/a\n")
    assert recipe.overrides(path, ["sft.lr=2e-5"]) == [
        *("-S", "sft.steps.gp_l=7", "-S", 'model.path="/models/a"', "-S", "sft.lr=2e-5"),
    ]
    path.write_text("sft:\n  lr: 1.0e-05\n")
    with pytest.raises(ParamError, match="add -S model.path="):  # a recipe is for a real checkpoint
        recipe.overrides(path, [])


def test_a_setting_without_an_equals_sign_stops_before_dvc_runs(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(recipe.os, "execvp", lambda *args: pytest.fail(f"ran {args}"))
    with pytest.raises(ParamError, match="-S model.path: give KEY=VALUE"):
        recipe.main([str(REPO / "configs" / "qwen2.5-1.5b-instruct.yaml"), "-S", "model.path"])

"""The arms of a study: the params that make each arm, and which params an experiment's results depend on."""

from __future__ import annotations

import re

from omegaconf import OmegaConf

from stages.claims.catalogue import SUBSETS
from stages.core.params import get, integer, load_params, number, per_env
from stages.envs import ENV_NAMES, get_env

# What makes each arm; the sft arms pin grpo.viter 1, so their GRPO model is the viter-1 arm. The budget arm
# also multiplies sft.steps and grpo.steps (arm_params); it is left out of the default --arms.
ARMS = {f"sft_{subset}": {"subset": subset, "grpo.viter": 1} for subset in SUBSETS} | {
    "grpo_viter3": {"subset": "all", "grpo.viter": 3},
    "budget": {"subset": "all", "grpo.viter": 1},
}


DEFAULT_ARMS = [arm for arm in ARMS if arm != "budget"]


# The models each arm's experiments hold, by name in the claims -> the stage that made them.
ARM_MODELS = {arm: {"base": "base", arm: "sft", "grpo": "grpo"} for arm in ARMS if arm.startswith("sft_")} | {
    "grpo_viter3": {"grpo_viter3": "grpo"},
    "budget": {"base": "base", "sft_all_budget": "sft", "grpo_budget": "grpo"},
}


def arm_params(arm: str, overrides: dict[str, str]) -> dict:
    """The params that make `arm`, with its steps where they are its own (params.yaml with the study's --set,
    per env where the steps are given per env): the grpo_viter3 arm's grpo.steps are those the study would
    train over study.viter3_step_divisor, the budget arm's steps study.budget_multiple times them."""
    made = dict(ARMS[arm])
    if arm not in ("budget", "grpo_viter3"):
        return made
    config = study_config(overrides)
    env = get(config, "env")
    if arm == "grpo_viter3":
        divisor = number(config, per_env(config, "study.viter3_step_divisor", env), minimum=1.0)
        key = per_env(config, "grpo.steps", env)
        made[key] = max(1, round(integer(config, key, minimum=1) / divisor))
        return made
    multiple = integer(config, "study.budget_multiple", minimum=2)
    for stage in ("sft", "grpo"):
        key = per_env(config, f"{stage}.steps", env)
        made[key] = integer(config, key, minimum=1) * multiple
    return made


# Params the arms and seeds set: the rest must agree for experiments to form one study.
ARM_KEYS = ("seed", "subset", "grpo.viter", "sft.steps", "grpo.steps")


# Sections of params.yaml that no stage reads: the study's own (what they change in an experiment, its arm's
# steps, is compared as ARM_KEYS) and the claims'.
STUDY_SECTIONS = ("study", "claims")


def read_params(text: str) -> dict:
    """A params.yaml as load_params reads it (OmegaConf's YAML: 1e-3 is a number)."""
    return OmegaConf.to_container(OmegaConf.create(text))


def study_config(overrides: dict[str, str]):
    """params.yaml with the study's --set values, each read as YAML the way load_params reads the file."""
    config = load_params()
    for key, value in overrides.items():
        OmegaConf.update(config, key, read_params(f"value: {value}")["value"], force_add=True)
    return config


def experiment_pattern(name: str) -> re.Pattern:
    return re.compile(rf"{re.escape(name)}-s(\d+)-({'|'.join(ARMS)})")


# The model params only a VL env's embedded model reads (its vision tower)
VISION_KEYS = ("model.vision_hidden_size", "model.vision_layers", "model.vision_lr_scale")


def study_params(params: dict) -> dict:
    """An experiment's params as they bear on its env, so that a change elsewhere keeps its results:
    without those its arm and seed set and the study's own sections; each per-env value ({gp_l: ...,
    virl_l: ...}) read for the env; of the generate sections only the env's own, with the code's defaults
    filled in (a new key at its default changes nothing); for a text env, without the keys only images and
    a vision tower read."""
    env = get_env(params.get("env"))

    def walk(node, prefix: str = ""):
        if isinstance(node, dict) and node and set(node) <= set(ENV_NAMES) and env.name in node:
            return walk(node[env.name], prefix)
        if not isinstance(node, dict):
            return node
        skipped = (*ARM_KEYS, *STUDY_SECTIONS)
        return {k: walk(v, f"{prefix}{k}.") for k, v in node.items() if f"{prefix}{k}" not in skipped}

    bearing = walk(params)
    section = env.params_key.removeprefix("generate.")
    bearing["generate"] = {section: {**env.defaults, **bearing.get("generate", {}).get(section, {})}}
    if not env.visual:
        for key in (*VISION_KEYS, *(f"{env.params_key}.{k}" for k in env.image_keys)):
            *parents, last = key.split(".")
            node = bearing
            for parent in parents:
                node = node.get(parent, {})
            node.pop(last, None)
    return bearing


def arm_values(params: dict) -> dict:
    """The values of an experiment's params that its arm and seed set (ARM_KEYS), per-env ones for its env."""
    values = {}
    for key in ARM_KEYS:
        node = params
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values[key] = node.get(params.get("env")) if isinstance(node, dict) else node
    return values

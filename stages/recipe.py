"""Recipes: settings for a real checkpoint, kept in configs/ as params overlays and run with `dvc exp run`.

    python -m stages.recipe configs/qwen2.5-1.5b-instruct.yaml -S model.path=/models/Qwen2.5-1.5B-Instruct
    python -m stages.recipe configs/qwen2.5-vl-3b-instruct.yaml -S model.path=... --print   # the command only

A recipe is a nested YAML mapping of params.yaml's keys. It is checked against params.yaml first: every key
must exist there, and every value must have the kind of the default it replaces (a number for a number, a
list for a list; a single value may replace a per-env mapping). Then `dvc exp run` runs with one
`-S key=value` per setting, yours after the recipe's and taking precedence, and any other `dvc exp run`
arguments (`--name`, `--queue`) passed through. So the experiment records the recipe's params as its own,
and `dvc exp show` and the study see them like any other.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from stages.core.params import MISSING, ParamError, load_params
from stages.envs import ENV_NAMES


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{dotted key: value} of the leaves of a nested mapping."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, dotted + ".")
        else:
            flat[dotted] = value
    return flat


def kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "list" if isinstance(value, list) else "mapping" if isinstance(value, dict) else "string"


def check(settings: dict[str, object], defaults, source: str) -> None:
    """ParamError naming the first setting that params.yaml does not have, or whose value is of another
    kind than its default's (null and strings mix: optional paths; a value may stand for a per-env map, not
    for a section)."""
    for key, value in settings.items():
        default = OmegaConf.select(defaults, key, default=MISSING)
        if default is MISSING:
            # a per-env entry (sft.steps.gp_l) of a mapping is fine; anything else is a typo
            parent, _, leaf = key.rpartition(".")
            mapping = OmegaConf.select(defaults, parent, default=None) if parent else None
            if not (OmegaConf.is_dict(mapping) and leaf in ENV_NAMES):
                raise ParamError(
                    f"{source}: {key} is not a param of params.yaml; see params.yaml for the keys"
                )
            continue
        default = OmegaConf.to_object(default) if OmegaConf.is_config(default) else default
        want, got = kind(default), kind(value)
        compatible = (
            want == got
            or {want, got} <= {"null", "string"}
            or {want, got} <= {"null", "number"}
            or (want == "mapping" and set(default) <= set(ENV_NAMES))  # one value for every env
        )
        if not compatible:
            raise ParamError(f"{source}: {key}={value!r} must be a {want}, like the default {default!r}")


def overrides(recipe: Path, extra: list[str]) -> list[str]:
    """The `-S key=value` arguments of a recipe followed by the caller's own (which replace the recipe's
    settings of the same keys)."""
    if not recipe.is_file():
        raise ParamError(f"recipe {str(recipe)!r} not found; choose one of configs/*.yaml")
    tree = OmegaConf.to_object(OmegaConf.load(recipe))
    if not isinstance(tree, dict):
        raise ParamError(f"recipe {recipe}: must be a mapping of params.yaml keys")
    settings = flatten(tree)
    check(settings, load_params(), str(recipe))
    mine = {item.split("=", 1)[0] for item in extra}
    if settings.get("model.path") is None and "model.path" not in mine:
        raise ParamError(f"recipe {recipe} is for a real checkpoint: add -S model.path=/path/to/checkpoint")
    arguments = []
    for key, value in settings.items():
        if key not in mine:
            # JSON scalars and lists are values of DVC's (Hydra's) override grammar
            arguments += ["-S", f"{key}={json.dumps(value)}"]
    for item in extra:
        arguments += ["-S", item]
    return arguments


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.recipe", description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", type=Path, help="a params overlay, e.g. configs/qwen2.5-1.5b-instruct.yaml")
    parser.add_argument("-S", "--set-param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--print", action="store_true", help="print the dvc exp run command, run nothing")
    args, passthrough = parser.parse_known_args(argv)
    for item in args.set_param:
        if "=" not in item:
            raise ParamError(f"-S {item}: give KEY=VALUE, e.g. -S model.path=/models/Qwen2.5-1.5B-Instruct")
    command = ["dvc", "exp", "run", *overrides(args.recipe, args.set_param), *passthrough]
    if args.print:
        print(" ".join(f"'{a}'" if any(c in a for c in ' []{}"*?') else a for a in command))
        return
    print(" ".join(command), flush=True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])

"""The four task environments behind one interface.

An environment is pure Python (no training code). It generates records and verifies responses:

    records = env.generate(sizes, cfg, seed)   # {split: [record, ...]}
    records = env.iter_records(sizes, cfg, seed)  # {split: iterator}: the same, made as they are read
    verdict = env.verify(record, response)     # Verdict(success, reward, feedback, recognized)

A record is a dict with `id`, `prompt` (the user turn; it states the rule or action space),
`answer` (the oracle SFT target), `task` (JSON string with what `verify` needs) and, for VL envs,
`image` (a PIL image). Splits: train, eval_id, eval_ood_rule, eval_ood_visual (VL only), corpus.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial

FEEDBACK_PREFIX = "You failed this trial because "


@dataclass(frozen=True)
class Verdict:
    success: bool
    reward: float
    feedback: str  # one line, the reason for failure ("" on success)
    recognized: bool | None = None  # VL only: were the cards / the observation read correctly


@dataclass(frozen=True)
class Env:
    name: str
    visual: bool
    params_key: str  # where its params live in params.yaml, e.g. generate.gp
    iter_records: Callable[[Mapping[str, int], Mapping, int], dict[str, Iterator[dict]]]
    verify: Callable[[dict, str], Verdict]
    defaults: Mapping  # its params_key section as the code fills it in
    image_keys: tuple[str, ...]  # keys of that section only a VL env's records read

    def generate(self, sizes: Mapping[str, int], cfg: Mapping, seed: int) -> dict[str, list[dict]]:
        return {split: list(records) for split, records in self.iter_records(sizes, cfg, seed).items()}

    @property
    def splits(self) -> tuple[str, ...]:
        visual = ("eval_ood_visual",) if self.visual else ()
        return ("train", "eval_id", "eval_ood_rule", *visual, "corpus")


def independent_unit(record: dict) -> str:
    """What a claims interval resamples whole: a V-IRL step's route (steps of one route share its city and
    instructions, so they are not independent), else the record itself (a GeneralPoints hand)."""
    return str(json.loads(record["task"]).get("route", record["id"]))


def get_env(name: str) -> Env:
    from stages.core.params import ParamError
    from stages.envs import general_points, virl

    if name not in ENV_NAMES:
        raise ParamError(f"env={name!r} is not allowed; use one of: {', '.join(ENV_NAMES)}")
    module, key = (general_points, "generate.gp") if name.startswith("gp") else (virl, "generate.virl")
    visual = name.endswith("_vl")
    records = partial(module.iter_records, visual=visual)
    return Env(name, visual, key, records, module.verify_record, module.DEFAULTS, module.IMAGE_KEYS)


ENV_NAMES = ("gp_l", "gp_vl", "virl_l", "virl_vl")

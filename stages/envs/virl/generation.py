"""Generation of V-IRL records: the generate.virl params, and every split's routes as records."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping

from stages.core.params import ParamError, check_int
from stages.envs.virl.images import random_scene
from stages.envs.virl.prompts import build_record
from stages.envs.virl.routes import expert_steps, sample_route

DEFAULTS = {
    "grid_size": 5,  # intersections per side of the square city
    "landmarks": 30,  # landmarks placed per city, on the 4 * grid_size**2 intersection sides
    "min_legs": 2,  # straight legs per route; each starts with a turn
    "max_legs": 2,
    "max_leg_blocks": 2,  # a leg is 1..max_leg_blocks blocks long
    "block_steps": 1,  # forward() steps per block; > 1 adds mid-block positions
    "history": 1,  # previous steps (observation, action) shown in the prompt
    "prompt_style": "compact",  # compact: word-level, for the embedded model | json: like the paper
    "corpus_relative_frac": 0.5,  # share of corpus routes in the relative action space
    "corpus_reading_frac": 0.3,  # VL: share of corpus steps that only read the image (no route, no history)
    "scene_variety": 0.0,  # VL: share of train and corpus cities drawn in a random scene (never dusk's)
    "ood_visual": "icons",  # eval_ood_visual city: icons | shift | scene | palette | landmarks (OOD_VISUAL)
    "image_width": 256,
    "image_height": 64,
}
# What only virl_vl's records read (sizes too: the visual-OOD split); virl_l ignores them.
IMAGE_KEYS = (
    "sizes.eval_ood_visual",
    "corpus_reading_frac",
    "scene_variety",
    "ood_visual",
    "image_width",
    "image_height",
)
PROMPT_STYLES = ("compact", "json")
# The eval_ood_visual city style per option: the ID landmarks with their icons smaller and thick-rimmed in
# the training scene (icons), in another scene and layout (shift), in another scene only (scene), with
# other icon colours too (palette), or landmarks the model never saw named (landmarks).
OOD_VISUAL = {
    "icons": "ood_icons",
    "shift": "ood_shift",
    "scene": "ood_scene",
    "palette": "ood_palette",
    "landmarks": "ood",
}


def validate(cfg: Mapping) -> dict:
    """`cfg` merged over DEFAULTS and checked; ParamError names the first bad generate.virl key."""
    unknown = sorted(str(key) for key in cfg if key not in DEFAULTS)
    if unknown:
        raise ParamError(f"generate.virl.{unknown[0]} is not a known key; use: {', '.join(DEFAULTS)}")
    cfg = {**DEFAULTS, **cfg}

    def integer(key: str, low: int, high: int) -> None:
        check_int(f"generate.virl.{key}", cfg[key], low, high)

    integer("grid_size", 3, 50)
    integer("landmarks", 1, 4 * cfg["grid_size"] ** 2)
    integer("min_legs", 1, 8)
    integer("max_legs", cfg["min_legs"], 8)
    integer("max_leg_blocks", 1, cfg["grid_size"] - 1)
    integer("block_steps", 1, 4)
    integer("history", 0, 20)
    integer("image_width", 32, 2048)
    integer("image_height", 16, 1024)
    for key, allowed in (("prompt_style", PROMPT_STYLES), ("ood_visual", tuple(OOD_VISUAL))):
        if cfg[key] not in allowed:
            raise ParamError(
                f"generate.virl.{key}={cfg[key]!r} is not allowed; use one of: {', '.join(allowed)}"
            )
    for key in ("corpus_relative_frac", "corpus_reading_frac", "scene_variety"):
        frac = cfg[key]
        if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 <= frac <= 1:
            raise ParamError(f"generate.virl.{key}={frac!r} must be a number in [0, 1]")
    return cfg


# split -> (city style, action space or "mixed", held out)
_SPLITS = {
    "train": ("id", "absolute", False),
    "eval_id": ("id", "absolute", True),
    "eval_ood_rule": ("id", "relative", True),
    "eval_ood_visual": ("ood", "absolute", True),
    "corpus": ("id", "mixed", False),
}


def generate(sizes: Mapping[str, int], cfg: Mapping, seed: int, visual: bool) -> dict[str, list[dict]]:
    """{split: records}; `sizes` counts routes, and every route gives one record per step."""
    return {split: list(records) for split, records in iter_records(sizes, cfg, seed, visual).items()}


def iter_records(
    sizes: Mapping[str, int], cfg: Mapping, seed: int, visual: bool
) -> dict[str, Iterator[dict]]:
    """`generate`'s records, one iterator per split that makes (and renders) a record when it is read.

    The config and sizes are checked at once; every route has its own seed, so the splits can be read
    in any order with the same result.
    """
    cfg = validate(cfg)
    splits = ("train", "eval_id", "eval_ood_rule", *(("eval_ood_visual",) if visual else ()), "corpus")
    counts = {split: check_int(f"generate.virl.sizes.{split}", sizes.get(split, 0), 0) for split in splits}

    def records(split: str) -> Iterator[dict]:
        style, space, held_out = _SPLITS[split]
        if split == "eval_ood_visual":
            style = OOD_VISUAL[cfg["ood_visual"]]
        for r in range(counts[split]):
            # One string seed per route: a route does not change when other sizes do.
            rng = random.Random(f"{seed}-virl-{split}-{r}")
            route = sample_route(rng, cfg, style, held_out)
            route_space = space
            if space == "mixed":
                route_space = "relative" if rng.random() < cfg["corpus_relative_frac"] else "absolute"
            steps = expert_steps(route)
            scene = None
            if visual and split in ("train", "corpus"):
                # the city's own draw, so the share leaves every other record as it was
                scene_rng = random.Random(f"{seed}-virl-scene-{split}-{r}")
                if scene_rng.random() < cfg["scene_variety"]:
                    scene = random_scene(scene_rng)
            for i in range(len(steps)):
                # its own draw per step, so the share leaves every other record as it was
                reading = (
                    visual
                    and split == "corpus"
                    and random.Random(f"{seed}-virl-reading-{r}-{i}").random() < cfg["corpus_reading_frac"]
                )
                record = build_record(route, steps, i, route_space, cfg, visual, reading, scene)
                route_id = f"{split}-r{r:05d}"
                record["task"] = json.dumps({**record["task"], "route": route_id}, sort_keys=True)
                yield {"id": f"{route_id}-s{i:02d}", **record}

    return {split: records(split) for split in splits}

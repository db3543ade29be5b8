"""GeneralPoints generation: the config, hands, records and (GP-VL) card images of every split.

`generate` returns every split's records as lists; `iter_records` makes the same records lazily, one
at a time (what the generate stage writes). Eval problems are drawn first and held out of train and
corpus.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping

from stages.core.params import ParamError, check_int
from stages.envs.general_points.images import BLACK_SUITS, RED_SUITS, SUITS, render_cards
from stages.envs.general_points.prompts import Hand, answer_text, prompt_text
from stages.envs.general_points.solver import combine, expr_steps, leaf, oracle_expr

# The embedded default, copied to params.yaml under generate.gp (see docs/embedded_default.md).
DEFAULTS: dict = {
    "num_cards": [2, 2, 3, 3, 4],  # each hand's size drawn uniformly from this list: 40% 2, 40% 3, 20% 4
    "target": "chain",  # an integer (e.g. 24) or "chain": the value of a random chain of steps
    "max_target": 99,  # chain mode: every intermediate result and the target lie in [1, max_target]
    "ops": "+-*",  # chain mode: operators the chain may use
    "prompt_style": "compact",  # compact | json
    "corpus_mix": {"id": 0.4, "ood": 0.4, "random": 0.2},  # rules in the pretraining corpus
    "eval_face_card": True,  # every eval hand holds a face card (ID and OOD evals stay comparable)
    "image_width": 224,  # whole 28-pixel image tokens (8 x 2)
    "image_height": 56,
}

# What only gp_vl's records read (sizes too: the visual-OOD split); gp_l ignores them.
IMAGE_KEYS = ("sizes.eval_ood_visual", "image_width", "image_height")

RANKS = ("A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K")
FACES = ("J", "Q", "K")
RULES = {"id": (10, 10, 10), "ood": (11, 12, 13)}  # values of J, Q, K; "random" draws them


def card_value(rank: str, face_values) -> int:
    if rank == "A":
        return 1
    if rank in FACES:
        return int(face_values[FACES.index(rank)])
    return int(rank)


def _param_error(key: str, value, allowed: str) -> ParamError:
    return ParamError(f"generate.gp.{key}={value!r} is not allowed; use {allowed}")


def check_config(cfg: Mapping) -> dict:
    """The full config (DEFAULTS for missing keys), validated; ParamError names a bad key."""
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ParamError(f"generate.gp.{unknown[0]} is not a known parameter; use: {', '.join(DEFAULTS)}")
    c = {**DEFAULTS, **cfg}

    sizes = c["num_cards"] if isinstance(c["num_cards"], list | tuple) else [c["num_cards"]]
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= 5 for n in sizes):
        raise _param_error("num_cards", c["num_cards"], "an integer in 2..5 or a non-empty list of them")
    c["num_cards"] = [int(n) for n in sizes]

    target = c["target"]
    if target != "chain" and (
        isinstance(target, bool) or not isinstance(target, int) or not 1 <= target <= 10_000
    ):
        raise _param_error("target", target, "'chain' or an integer in [1, 10000]")
    check_int("generate.gp.max_target", c["max_target"], 1, 100_000)
    ops = c["ops"]
    if not isinstance(ops, str) or not ops or len(set(ops)) != len(ops) or set(ops) - set("+-*/"):
        raise _param_error("ops", ops, "a non-empty string of distinct operators from '+-*/'")
    if c["prompt_style"] not in ("compact", "json"):
        raise _param_error("prompt_style", c["prompt_style"], "one of: compact, json")
    if not isinstance(c["eval_face_card"], bool):
        raise _param_error("eval_face_card", c["eval_face_card"], "true or false")
    check_int("generate.gp.image_width", c["image_width"], 32, 4096)
    check_int("generate.gp.image_height", c["image_height"], 16, 4096)

    mix = c["corpus_mix"]
    if not isinstance(mix, Mapping) or sorted(mix) != ["id", "ood", "random"]:
        raise _param_error("corpus_mix", mix, "a mapping with keys id, ood, random")
    for key in ("id", "ood", "random"):
        share = mix[key]
        if isinstance(share, bool) or not isinstance(share, int | float) or share < 0:
            raise _param_error(f"corpus_mix.{key}", share, "a number >= 0")
    if abs(sum(mix.values()) - 1) > 1e-6:
        raise _param_error("corpus_mix", dict(mix), "shares that sum to 1")
    c["corpus_mix"] = {key: float(mix[key]) for key in ("id", "ood", "random")}
    return c


def _random_chain(rng: random.Random, values: list[int], ops: str, max_target: int):
    """Steps combining two pool numbers at a time until one is left, all results in [1, max_target]."""
    for _ in range(20):
        pool = [leaf(v) for v in values]
        steps = []
        while len(pool) > 1:
            i, j = rng.sample(range(len(pool)), 2)
            a, b, op = pool[i], pool[j], rng.choice(ops)
            if op == "-" and a.value < b.value or op == "/" and b.value > a.value:
                a, b = b, a  # keep results positive / exact more often instead of resampling
            if op == "/" and (b.value == 0 or a.value % b.value):
                break
            e = combine(a, op, b)
            if not 1 <= e.value <= max_target:
                break
            steps.append((a.value, op, b.value, e.value))
            pool = [x for k, x in enumerate(pool) if k not in (i, j)] + [e]
        else:
            return steps, pool[0]
    return None


def _draw_hand(rng: random.Random, cfg: dict, face_values, suits, need_face: bool, excluded) -> Hand:
    """A hand whose problem is solvable and not in `excluded` (keys (sorted ranks, target))."""
    deck = [(rank, suit) for suit in suits for rank in RANKS]
    for _ in range(5000):
        cards = rng.sample(deck, rng.choice(cfg["num_cards"]))
        if need_face and not any(rank in FACES for rank, _ in cards):
            continue
        ranks, card_suits = [r for r, _ in cards], [s for _, s in cards]
        values = [card_value(r, face_values) for r in ranks]
        if cfg["target"] == "chain":
            chain = _random_chain(rng, values, cfg["ops"], cfg["max_target"])
            if chain is None:
                continue
            steps, expr = chain
        else:
            expr = oracle_expr(tuple(sorted(values)), cfg["target"])
            if expr is None:
                continue
            steps = expr_steps(expr)
        target = int(expr.value)
        if (tuple(sorted(ranks)), target) in excluded:
            continue
        return Hand(ranks, card_suits, values, target, steps, expr)
    raise ParamError(
        f"generate.gp: no new solvable hand found for target={cfg['target']!r} with "
        f"num_cards={cfg['num_cards']}; ask for fewer records or allow more hands"
    )


def _record(split: str, i: int, hand: Hand, rule: str, face_values, cfg: dict, visual: bool) -> dict:
    task = {
        "cards": hand.ranks,
        "suits": hand.suits,
        "numbers": hand.values,
        "target": hand.target,
        "rule": rule,
        "face_values": list(face_values),
        "style": cfg["prompt_style"],
        "visual": visual,
    }
    record = {
        "id": f"gp-{split}-{i:06d}",
        "prompt": prompt_text(hand, face_values, cfg["prompt_style"], visual),
        "answer": answer_text(hand, cfg["prompt_style"], visual),
        "task": json.dumps(task, sort_keys=True),
    }
    if visual:
        cards = list(zip(hand.ranks, hand.suits, strict=True))
        red = hand.suits[0] in RED_SUITS
        size, slots = (cfg["image_width"], cfg["image_height"]), max(cfg["num_cards"])
        record["image"] = render_cards(cards, *size, red=red, slots=slots)
    return record


def _corpus_rules(count: int, mix: dict, rng: random.Random) -> list[str]:
    """Exactly round(share * count) records per rule (largest remainder), in shuffled order."""
    exact = {rule: share * count for rule, share in mix.items()}
    counts = {rule: int(x) for rule, x in exact.items()}
    by_remainder = sorted(mix, key=lambda rule: (-(exact[rule] - counts[rule]), rule))
    for rule in by_remainder[: count - sum(counts.values())]:
        counts[rule] += 1
    rules = [rule for rule in ("id", "ood", "random") for _ in range(counts[rule])]
    rng.shuffle(rules)
    return rules


def generate(sizes: Mapping[str, int], cfg: Mapping, seed: int, visual: bool) -> dict[str, list[dict]]:
    """Records for every split. Eval splits are drawn first and held out of train and corpus."""
    return {split: list(records) for split, records in iter_records(sizes, cfg, seed, visual).items()}


def iter_records(
    sizes: Mapping[str, int], cfg: Mapping, seed: int, visual: bool
) -> dict[str, Iterator[dict]]:
    """`generate`'s records, one iterator per split that makes (and renders) a record when it is read.

    The config is checked and the eval hands are drawn at once (train and corpus must avoid them);
    the rest is made lazily, and the splits can be read in any order with the same result.
    """
    cfg = check_config(cfg)
    splits = ("train", "eval_id", "eval_ood_rule", *(("eval_ood_visual",) if visual else ()), "corpus")
    unknown = sorted(set(sizes) - set(splits) - {"eval_ood_visual"})
    if unknown:
        raise ValueError(f"unknown split {unknown[0]!r}; GeneralPoints has {', '.join(splits)}")
    counts = {split: check_int(f"sizes.{split}", sizes.get(split, 0), 0) for split in splits}
    # VL draws from the black or the red half of the deck; the text game from the whole deck.
    id_suits = BLACK_SUITS if visual else SUITS

    def draw(rng: random.Random, rule: str, suits, need_face: bool, excluded) -> tuple[tuple, Hand]:
        faces = RULES.get(rule) or tuple(rng.randint(1, 13) for _ in FACES)
        return faces, _draw_hand(rng, cfg, faces, suits, need_face, excluded)

    held_out: set = set()
    eval_hands: dict[str, list[tuple[str, tuple, Hand]]] = {}
    face = cfg["eval_face_card"]
    evals = {"eval_id": ("id", id_suits, face), "eval_ood_rule": ("ood", id_suits, True)}
    if visual:
        evals["eval_ood_visual"] = ("id", RED_SUITS, face)
    for split, (rule, suits, need_face) in evals.items():
        rng = random.Random(f"{seed}-gp-{split}")
        seen: set = set()  # distinct problems within an eval split, so no prompt counts twice
        eval_hands[split] = []
        for _ in range(counts[split]):
            faces, hand = draw(rng, rule, suits, need_face, seen)
            eval_hands[split].append((rule, faces, hand))
            seen.add(_key(hand))
        held_out |= seen

    def evaluation(split: str) -> Iterator[dict]:
        for i, (rule, faces, hand) in enumerate(eval_hands[split]):
            yield _record(split, i, hand, rule, faces, cfg, visual)

    def train() -> Iterator[dict]:
        rng = random.Random(f"{seed}-gp-train")
        for i in range(counts["train"]):
            faces, hand = draw(rng, "id", id_suits, False, held_out)
            yield _record("train", i, hand, "id", faces, cfg, visual)

    def corpus() -> Iterator[dict]:
        rng = random.Random(f"{seed}-gp-corpus")
        rules = _corpus_rules(counts["corpus"], cfg["corpus_mix"], rng)
        # A rule variant only shows in hands with a face card, so OOD and random-rule hands hold one.
        for i, rule in enumerate(rules):
            faces, hand = draw(rng, rule, id_suits, rule != "id", held_out)
            yield _record("corpus", i, hand, rule, faces, cfg, visual)

    made = {"train": train(), **{split: evaluation(split) for split in evals}, "corpus": corpus()}
    return {split: made[split] for split in splits}


def _key(hand: Hand) -> tuple:
    return (tuple(sorted(hand.ranks)), hand.target)

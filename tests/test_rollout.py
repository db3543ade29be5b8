"""The rollout engine: k samples per prompt within the length limit, with and without feedback turns."""

from __future__ import annotations

import pytest

from stages.core.params import ParamError
from stages.envs import FEEDBACK_PREFIX, Verdict, get_env
from stages.inference.models import build_model, build_tokenizer
from stages.inference.rollout import HFEngine, resolve_engine, rollout

MAX_NEW_TOKENS = 12


@pytest.fixture(scope="module")
def records():
    splits = get_env("gp_l").generate({"train": 6, "eval_id": 0, "eval_ood_rule": 0, "corpus": 40}, {}, 0)
    return splits["train"], splits["corpus"]


@pytest.fixture(scope="module")
def engine(records):
    train, corpus = records
    tokenizer = build_tokenizer([r["prompt"] for r in corpus] + [r["answer"] for r in corpus])
    model = build_model(tokenizer, hidden_size=16, layers=1, heads=2, max_length=256, seed=0)
    return HFEngine(model, tokenizer, batch_size=4, seed=0)


class Recorder:
    """An env whose verifier accepts nothing and records the conversations it was shown."""

    name, visual = "recorder", False

    def __init__(self):
        self.seen: list[str] = []

    def verify(self, record, response):
        self.seen.append(response)
        return Verdict(False, -1.0, "the answer is wrong.")


def test_single_turn_gives_k_samples_within_the_length_limit(engine, records):
    train, _ = records
    episodes = rollout(
        engine, get_env("gp_l"), train, k=5, temperature=1.0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS
    )
    assert len(episodes) == len(train)
    for group in episodes:
        assert len(group) == 5
        for episode in group:
            assert len(episode.attempts) == 1
            assert 1 <= episode.generated_tokens <= MAX_NEW_TOKENS
            assert len(episode.attempts[0].split()) <= MAX_NEW_TOKENS


def test_verification_iterations_retry_failures_with_feedback(engine, records):
    train, _ = records
    env = Recorder()
    episodes = rollout(
        engine, env, train, k=3, temperature=1.0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS, viter=4
    )
    for group in episodes:
        for episode in group:
            assert len(episode.attempts) == 4 and not episode.success
            assert episode.generated_tokens <= 4 * MAX_NEW_TOKENS
    assert len(env.seen) == len(train) * 3 * 4
    # The feedback turn reaches the model: the template renders it into the next prompt.
    conversation = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": FEEDBACK_PREFIX + "the answer is wrong."},
    ]
    rendered = engine.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert FEEDBACK_PREFIX in rendered and rendered.endswith("<|assistant|>")


def test_a_success_stops_the_episode(engine, records):
    train, _ = records

    class AcceptAll(Recorder):
        def verify(self, record, response):
            return Verdict(True, 5.0, "")

    episodes = rollout(
        engine, AcceptAll(), train, k=2, temperature=1.0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS, viter=3
    )
    assert all(len(e.attempts) == 1 and e.success for group in episodes for e in group)


def test_same_seed_same_samples_and_greedy_is_repeatable(engine, records):
    train, _ = records
    env = get_env("gp_l")

    def sample(temperature):
        episodes = rollout(engine, env, train, 2, temperature, 1.0, MAX_NEW_TOKENS)
        return [[e.attempts for e in group] for group in episodes]

    assert sample(1.0) == sample(1.0)
    greedy = sample(0.0)
    assert greedy == sample(0.0)
    assert all(g[0] == g[1] for g in greedy)


def test_engine_names_are_checked():
    assert resolve_engine("hf") == "hf"
    assert resolve_engine("auto") in ("hf", "vllm")
    with pytest.raises(ParamError, match="rollout.engine"):
        resolve_engine("tgi")

"""The rollout engine: k samples per prompt within the length limit, with and without feedback turns."""

from __future__ import annotations

import json

import pytest
import torch

from stages.core.params import ParamError
from stages.envs import FEEDBACK_PREFIX, Verdict, get_env
from stages.inference.models import ASSISTANT, PAD, UNK, USER, build_model, build_tokenizer
from stages.inference.rollout import HFEngine, first_turn, make_engine, resolve_engine, rollout

MAX_NEW_TOKENS = 12


@pytest.fixture(scope="module")
def records():
    splits = get_env("gp_l").generate({"train": 6, "eval_id": 0, "eval_ood_rule": 0, "corpus": 40}, {}, 0)
    return splits["train"], splits["corpus"]


@pytest.fixture(scope="module")
def engine(records):
    """A random model whose greedy answers are words: the special tokens other than eos get zero embeddings
    (a random tied model otherwise repeats the prompt's last token, <|assistant|>, which decodes to "")."""
    train, corpus = records
    tokenizer = build_tokenizer([r["prompt"] for r in corpus] + [r["answer"] for r in corpus])
    model = build_model(tokenizer, hidden_size=16, layers=1, heads=2, max_length=256, seed=0)
    specials = [tokenizer.convert_tokens_to_ids(t) for t in (PAD, UNK, USER, ASSISTANT)]
    with torch.no_grad():
        model.get_input_embeddings().weight[specials] = 0.0
    return HFEngine(model, tokenizer, batch_size=4, seed=0)


class Recorder:
    """An env whose verifier accepts nothing and records the responses it was shown; its reason names the
    response it rejects, so that each retry's feedback can be traced to the answer before it."""

    name, visual = "recorder", False

    def __init__(self):
        self.seen: list[str] = []

    def verify(self, record, response):
        feedback = f"the answer {len(self.seen)} is wrong."  # one reason per answer, never repeated
        self.seen.append((record["id"], response, feedback))
        return Verdict(False, -1.0, feedback)


class Listening:
    """An engine that records every conversation it is asked to answer, and answers through `engine`."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def generate(self, conversations, n, temperature, top_p, max_new_tokens):
        self.calls.append(([list(c) for c in conversations], n))
        return self.engine.generate(conversations, n, temperature, top_p, max_new_tokens)


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
    env, k, viter = Recorder(), 3, 4
    listening = Listening(engine)
    episodes = rollout(
        listening, env, train, k=k, temperature=1.0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS, viter=viter
    )
    for group in episodes:
        for episode in group:
            assert len(episode.attempts) == viter and not episode.success
            assert episode.generated_tokens <= viter * MAX_NEW_TOKENS
    assert len(env.seen) == len(train) * k * viter
    issued = {feedback: (record, response) for record, response, feedback in env.seen}
    # The first call asks k answers to each prompt; every retry asks one answer to its own conversation: the
    # prompt, then each earlier answer followed by the verifier's reason for that very answer.
    assert [call[1] for call in listening.calls] == [k] + [1] * (viter - 1)
    assert listening.calls[0][0] == [[first_turn(r)] for r in train]
    for attempt, (conversations, _) in enumerate(listening.calls[1:], start=1):
        assert len(conversations) == len(train) * k  # every episode failed: all are retried, in order
        for row, conversation in enumerate(conversations):
            record, episode = train[row // k], episodes[row // k][row % k]
            assert conversation[0] == first_turn(record) and len(conversation) == 1 + 2 * attempt
            answers, feedback = conversation[1::2], conversation[2::2]
            assert answers == [{"role": "assistant", "content": a} for a in episode.attempts[:attempt]]
            for answer, turn in zip(answers, feedback, strict=True):
                assert turn["role"] == "user" and turn["content"].startswith(FEEDBACK_PREFIX)
                reason = turn["content"].removeprefix(FEEDBACK_PREFIX)
                assert issued[reason] == (record["id"], answer["content"])  # its own answer's reason
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


def answers(engine, train, temperature, top_p=1.0, k=2) -> list[list[str]]:
    episodes = rollout(engine, get_env("gp_l"), train, k, temperature, top_p, MAX_NEW_TOKENS)
    return [[e.attempts[0] for e in group] for group in episodes]


def test_same_seed_same_samples_and_greedy_is_repeatable(engine, records):
    train, _ = records
    assert answers(engine, train, 1.0) == answers(engine, train, 1.0)
    greedy = answers(engine, train, 0.0)
    assert greedy == answers(engine, train, 0.0)
    assert all(g[0] == g[1] and g[0] for g in greedy)
    # The temperature reaches the sampler: near 0 it samples the greedy answers, at 1 answers that differ
    # from them and from each other; a nucleus that keeps only the likeliest token is greedy again.
    assert answers(engine, train, 1e-5) == greedy
    hot = answers(engine, train, 1.0, k=4)
    assert all(len(set(group)) > 1 and group[0] != g[0] for group, g in zip(hot, greedy, strict=True))
    assert answers(engine, train, 1.0, top_p=1e-6) == greedy


def test_sampling_ignores_the_checkpoints_generation_defaults(engine, records, tmp_path):
    """A checkpoint whose generation_config.json would make sampling greedy (Qwen's test checkpoints ship
    top_k 20 and top_p 0.001; here top_k 1, temperature 0.01 and a repetition penalty of 50) samples as the
    same weights without those defaults do: exactly the temperature and top_p asked for."""
    train, _ = records
    engine.model.save_pretrained(tmp_path, safe_serialization=True)
    engine.tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "generation_config.json").read_text())
    config |= {"do_sample": True, "top_k": 1, "top_p": 0.001, "temperature": 0.01, "repetition_penalty": 50.0}
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    loaded = make_engine("hf", tmp_path, batch_size=engine.batch_size, seed=engine.seed)
    assert loaded.model.generation_config.top_k == 1  # the defaults are there to be ignored
    sampled = answers(loaded, train, 1.0, k=4)
    assert all(len(set(group)) > 1 for group in sampled)
    assert sampled == answers(engine, train, 1.0, k=4)


def test_engine_names_are_checked():
    assert resolve_engine("hf") == "hf"
    assert resolve_engine("auto") in ("hf", "vllm")
    with pytest.raises(ParamError, match="rollout.engine"):
        resolve_engine("tgi")

"""Verification iterations in GRPO (stages/training/viter.py): every retry gets the verifier's reason for
its own record, found by the record id its prompt carries, and the feedback tokens stay out of the loss."""

from __future__ import annotations

import copy

import pytest
from conftest import make_repo, run
from test_grpo import trainer_for
from test_vl import MICRO_VL, QWEN_VL_TEMPLATE

from stages.envs import FEEDBACK_PREFIX, get_env
from stages.training.viter import RECORD, FeedbackRollout, feedback_turn, record_of, with_record_keys


def gp_vl_records(n: int) -> list[dict]:
    return get_env("gp_vl").generate({"train": n}, {"image_width": 112, "image_height": 56}, 0)["train"]


def as_list(value):
    """An array (numpy, torch) as nested lists, a list as it is."""
    return value.tolist() if hasattr(value, "tolist") else value


def same_text_pair(prompts, tasks) -> tuple[int, int]:
    """The first two rows whose prompt texts are equal and whose hands (tasks) differ."""
    seen = {}
    for i, (prompt, task) in enumerate(zip(prompts, tasks, strict=True)):
        j = seen.setdefault(prompt, i)
        if tasks[j] != task:
            return j, i
    raise AssertionError("no two records share a prompt text")


def test_the_record_key_survives_trl_and_leaves_the_templates_unchanged():
    import datasets
    from trl.data_utils import prepare_multimodal_messages

    from stages.inference.models import CHAT_TEMPLATE, build_tokenizer
    from stages.training.data import conversational

    records = gp_vl_records(40)
    data = datasets.Dataset.from_list(records)
    a, b = same_text_pair(data["prompt"], data["task"])
    prompts = with_record_keys(conversational(data).remove_columns("completion"), data["id"])
    # as GRPOTrainer hands them to a rollout_func: a dataset row, deep-copied, its image put in the message
    rows = [
        prepare_multimodal_messages(copy.deepcopy(prompts[i]["prompt"]), [prompts[i]["image"]])
        for i in (a, b)
    ]
    assert [record_of(row) for row in rows] == [records[a]["id"], records[b]["id"]]
    rollout = FeedbackRollout.from_records(get_env("gp_vl"), data["id"], data["task"], viter=2)
    assert [rollout.task(row) for row in rows] == [records[a]["task"], records[b]["task"]]
    # chat templates read role and content only: the embedded one and Qwen2-VL's render the key to nothing
    tokenizer = build_tokenizer([r["prompt"] for r in records], vision=True)
    plain = [[{k: v for k, v in m.items() if k != RECORD} for m in row] for row in rows]
    for template in (CHAT_TEMPLATE, QWEN_VL_TEMPLATE):
        render = dict(chat_template=template, add_generation_prompt=True, tokenize=False)
        assert tokenizer.apply_chat_template(rows, **render) == tokenizer.apply_chat_template(plain, **render)


def test_a_prompt_without_its_record_stops_the_rollout():
    env = get_env("gp_vl")
    rollout = FeedbackRollout(env, {"gp-train-000000": "{}"}, viter=2)
    with pytest.raises(ValueError, match="without its 'record' key"):
        rollout([[{"role": "user", "content": "Rule : J Q K = 10 10 10 . Target : 5"}]], trainer=None)
    with pytest.raises(ValueError, match="gp-train-000009"):
        rollout([[{"role": "user", "content": "x", RECORD: "gp-train-000009"}]], trainer=None)
    with pytest.raises(ValueError, match="not unique"):
        FeedbackRollout.from_records(env, ["a", "a"], ["{}", "{}"], viter=2)


@pytest.fixture(scope="module")
def micro_vl_base(tmp_path_factory):
    """test_vl's micro GP-VL repository up to its embedded base model: `dvc repro base` only."""
    repo = make_repo(tmp_path_factory.mktemp("vl_base") / "repo", MICRO_VL)
    run(["dvc", "repro", "base"], repo)
    return repo


@pytest.mark.slow
def test_each_retry_gets_the_feedback_of_its_own_hand(micro_vl_base, tmp_path):
    # Two GP-VL records whose prompt texts are equal (the cards are in the image) and whose hands differ.
    # The model answers the first hand's formula with a wrong result to both: the first record is told its
    # arithmetic is wrong, the second that it misread its cards. A lookup by prompt text gives both the
    # same hand's reason.
    import datasets
    from trl import GRPOConfig, GRPOTrainer
    from trl.data_utils import prepare_multimodal_messages

    from stages.core.storage import read_split
    from stages.inference.models import ASSISTANT, load_model
    from stages.training.checkpoints import Checkpoints
    from stages.training.data import conversational
    from stages.training.rewards import env_reward
    from stages.training.settings import trainer_defaults

    env = get_env("gp_vl")
    processor, model = load_model(micro_vl_base / "models" / "base")
    tokenizer = processor.tokenizer
    data = read_split(micro_vl_base / "data" / "generated" / "train.parquet")
    data = data.select(same_text_pair(data["prompt"], data["task"]))
    records = data.to_list()
    words = records[0]["answer"].split()
    vocab = tokenizer.get_vocab()
    words[-1] = next(str(n) for n in range(1, 100) if str(n) != words[-1] and str(n) in vocab)
    answer = " ".join(words)
    reasons = [env.verify(r, answer).feedback for r in records]
    assert all(reasons) and reasons[0] != reasons[1] and "not" in reasons[0] and "cards" in reasons[1]

    # The model's answer, forced by a sequence bias after every assistant prompt (transformers' generation
    # option, through GRPOConfig.generation_kwargs): the generation is the real one, its outcome known.
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in answer_ids
    forced = [tokenizer.convert_tokens_to_ids(ASSISTANT), *answer_ids, tokenizer.eos_token_id]
    bias = [[forced[: k + 1], 1e4] for k in range(1, len(forced))]
    train = datasets.concatenate_datasets(  # as stages/grpo.py builds it
        [conversational(data).remove_columns("completion"), data.select_columns(["task"])], axis=1
    )
    train = with_record_keys(train, data["id"])
    args = GRPOConfig(
        **trainer_defaults(Checkpoints(tmp_path / "out", every=0), steps=1, batch_size=4, lr=1e-4, seed=0),
        num_generations=2,
        max_completion_length=len(forced) + 4,
        generation_kwargs={"sequence_bias": bias},
    )
    trainer = GRPOTrainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=processor,
        reward_funcs=env_reward(env),
        rollout_func=FeedbackRollout.from_records(env, data["id"], data["task"], viter=2),
    )

    # The key changes nothing TRL tokenizes: the same ids, pixels and token types with and without it.
    keyed = [prepare_multimodal_messages(train[i]["prompt"], [train[i]["image"]]) for i in range(2)]
    plain = [[{k: v for k, v in m.items() if k != RECORD} for m in row] for row in keyed]
    (ids, _, fields), (plain_ids, _, plain_fields) = map(trainer._tokenize_prompts, (keyed, plain))
    assert ids == plain_ids and fields.keys() == plain_fields.keys() >= {"pixel_values", "mm_token_type_ids"}
    for key, value in fields.items():  # arrays (pixels, grids) or per-token lists
        assert as_list(value) == as_list(plain_fields[key])

    # TRL's own batch step: dataset rows, each prompt once per generation, through the rollout_func
    inputs = [train[i] for i in range(2) for _ in range(2)]
    batch = trainer._generate_and_score_completions(inputs)
    eos = [tokenizer.eos_token_id]
    for row in range(4):
        n = int(batch["completion_mask"][row].sum())
        ids, mask = batch["completion_ids"][row][:n].tolist(), batch["tool_mask"][row][:n].tolist()
        turn = feedback_turn(processor, reasons[row // 2])  # the reason for this row's own hand
        assert FEEDBACK_PREFIX.strip() in tokenizer.decode(turn)
        assert ids == answer_ids + eos + turn + answer_ids + eos  # failed, told why, failed again (viter 2)
        assert mask == [1] * (len(answer_ids) + 1) + [0] * len(turn) + [1] * (len(answer_ids) + 1)
        assert inputs[row]["response"] == answer  # the last attempt reaches the reward function


@pytest.mark.slow
def test_verification_iterations_feed_back_the_reason_and_mask_it(micro_split, tmp_path):
    from trl import GRPOTrainer

    env = get_env("gp_l")
    trainer, data = trainer_for(micro_split, tmp_path, GRPOTrainer)
    tasks = dict(zip(data["id"], data["task"], strict=True))
    prompts = [
        [{"role": "user", "content": p, RECORD: i}]
        for p, i in zip(data["prompt"], data["id"], strict=True)
        for _ in range(4)
    ]
    # the key changes nothing TRL tokenizes under the embedded text template
    plain = [[{"role": "user", "content": p[0]["content"]}] for p in prompts]
    assert trainer._tokenize_prompts(prompts) == trainer._tokenize_prompts(plain)
    out = FeedbackRollout.from_records(env, data["id"], data["task"], viter=3)(prompts, trainer)
    tokenizer, eos = trainer.processing_class, trainer.processing_class.eos_token_id
    retried = 0
    for i, (ids, mask) in enumerate(zip(out["completion_ids"], out["env_mask"], strict=True)):
        # runs alternate: a model answer (mask 1), a feedback turn (mask 0), an answer, ...
        runs, start = [], 0
        for j in range(1, len(ids) + 1):
            if j == len(ids) or mask[j] != mask[start]:
                runs.append(ids[start:j])
                start = j
        answers, feedback = runs[0::2], runs[1::2]
        assert mask[0] == 1 and len(answers) <= 3 and len(feedback) == len(answers) - 1
        task = {"task": tasks[prompts[i][0][RECORD]]}
        verdicts = [env.verify(task, tokenizer.decode(a, skip_special_tokens=True).strip()) for a in answers]
        for answer, turn, verdict in zip(answers, feedback, verdicts, strict=False):
            text = tokenizer.decode(turn)
            assert FEEDBACK_PREFIX.strip() in text and text.strip().endswith("<|assistant|>")
            # a truncated answer is closed before the feedback; the reason is the one for this record's answer
            assert turn == [eos] * (answer[-1] != eos) + feedback_turn(tokenizer, verdict.feedback)
        assert not any(v.success for v in verdicts[:-1])  # it stops at the first success
        assert len(answers) == 3 or verdicts[-1].success
        assert out["response"][i] == tokenizer.decode(answers[-1], skip_special_tokens=True).strip()
        retried += len(feedback) > 0
    assert retried > 0  # the micro model fails often enough to exercise the retries

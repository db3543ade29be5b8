"""Verification iterations (VIter) inside TRL's GRPO loop, as a `rollout_func`.

A failed answer gets the verifier's one-line reason as a user turn ("You failed this trial because ...") and
the model answers again, up to `viter` attempts. The completion the trainer learns from holds every attempt
with the feedback between them; `env_mask` keeps the feedback tokens out of the loss, and `response` (the last
attempt alone) is what the reward function (stages/training/rewards.py) verifies.

GRPOTrainer hands a rollout_func the prompts' message lists only, not their dataset rows, and prompt texts do
not name a record: GP-VL leaves the cards to the image, so thousands of hands share a few dozen texts. Each
prompt's messages therefore carry their record's id under `RECORD` (`with_record_keys`); TRL copies messages
with their extra keys (`prepare_multimodal_messages` rebuilds them as `{**message, ...}`) and chat templates
ignore keys they do not read, so the key changes no token. The rollout looks each task up by that id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import datasets

from stages.core.params import ParamError
from stages.core.private import generate_single_turn, tokenize_prompts
from stages.envs import FEEDBACK_PREFIX, Env
from stages.inference.models import text_tokenizer

RECORD = "record"  # the key of a prompt message that holds its record's id


def with_record_keys(prompts: datasets.Dataset, ids: Sequence[str]) -> datasets.Dataset:
    """`prompts` (a `prompt` column of message lists, row i for record ids[i]) with each message naming its
    record under RECORD."""
    keyed = [
        [{**message, RECORD: record} for message in prompt]
        for prompt, record in zip(prompts["prompt"], ids, strict=True)
    ]
    return prompts.remove_columns("prompt").add_column("prompt", keyed)


def record_of(prompt: list[dict]) -> str:
    """The record id a prompt's messages carry (its last message's RECORD key)."""
    record = prompt[-1].get(RECORD)
    if record is None:
        raise ValueError(
            f"grpo.viter > 1: a prompt reached the rollout without its {RECORD!r} key, so its task is "
            "unknown; build the prompts with stages.training.viter.with_record_keys"
        )
    return record


def feedback_turn(processing_class, feedback: str) -> list[int]:
    """Token ids of the feedback user turn plus the next assistant prompt, as the chat template renders them
    after an answer that ended with eos (TRL's _get_tool_suffix_ids does the same for tool results). A VLM
    processor's template may live on the processor alone (Qwen2-VL's chat_template.json)."""
    tokenizer = text_tokenizer(processing_class)
    template = dict(chat_template=processing_class.chat_template, tokenize=True, return_dict=False)
    head = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "x"}]
    turn = [{"role": "user", "content": FEEDBACK_PREFIX + feedback}]
    prefix = tokenizer.apply_chat_template(head, **template)
    full = tokenizer.apply_chat_template(head + turn, add_generation_prompt=True, **template)
    if tokenizer.eos_token_id in prefix:  # some templates (Qwen) put a newline after the answer's eos
        prefix = prefix[: len(prefix) - prefix[::-1].index(tokenizer.eos_token_id)]
    if full[: len(prefix)] != prefix:
        raise ParamError("grpo.viter > 1 needs a chat template that renders earlier turns unchanged; use 1")
    return full[len(prefix) :]


def extend_token_fields(fields: dict, rows: list[int], extra: list[list[int]]) -> dict:
    """The multimodal fields of the prompts `rows` (TRL's tokenized prompts, stages/core/private.py),
    for prompts that have grown by `extra` tokens: per-token fields (Qwen2-VL's mm_token_type_ids) get zeros
    (text) for them."""
    return {
        key: [value[i] + [0] * len(more) for i, more in zip(rows, extra, strict=True)]
        for key, value in fields.items()
        if isinstance(value, list) and value and isinstance(value[0], list)
    }


class FeedbackRollout:
    """A TRL rollout_func: up to `viter` attempts per answer, the verifier's reason between them, the task of
    each prompt found by its record id (`tasks`: id -> the record's task JSON). A VL prompt keeps its image:
    every attempt is generated with the image fields of its own prompt."""

    def __init__(self, env: Env, tasks: Mapping[str, str], viter: int):
        self.env, self.tasks, self.viter = env, dict(tasks), viter

    @classmethod
    def from_records(cls, env: Env, ids: Sequence[str], tasks: Sequence[str], viter: int) -> FeedbackRollout:
        """The rollout for training records given as parallel id and task columns; ids must be unique."""
        by_id = dict(zip(ids, tasks, strict=True))
        if len(by_id) != len(ids):
            raise ValueError(
                "grpo.viter > 1: the training records' ids are not unique; a retry's task is unknown"
            )
        return cls(env, by_id, viter)

    def task(self, prompt: list[dict]) -> str:
        record = record_of(prompt)
        if record not in self.tasks:
            raise ValueError(f"grpo.viter > 1: a prompt names record {record!r}, not a training record")
        return self.tasks[record]

    def __call__(self, prompts: list[list[dict]], trainer) -> dict:
        env, viter = self.env, self.viter
        tasks = [self.task(prompt) for prompt in prompts]  # before generating: a missing key fails at once
        processor = trainer.processing_class
        tokenizer = text_tokenizer(processor)
        prompt_ids, images, fields = tokenize_prompts(trainer, prompts)  # TRL's own chat templating
        completion, mask, logprobs = ([[] for _ in prompts] for _ in range(3))
        response = [""] * len(prompts)
        todo = list(range(len(prompts)))
        inputs, input_images, input_fields = prompt_ids, images, fields
        for attempt in range(viter):
            # TRL's generation backend (transformers or colocated vLLM); one answer per open episode after
            # the first attempt, since every episode then has its own history.
            ids, logps = generate_single_turn(
                trainer, inputs, input_images, input_fields, trainer.num_generations if attempt == 0 else 1
            )
            retry = []
            for row, i in enumerate(todo):
                answer = list(ids[row])
                completion[i] += answer
                mask[i] += [1] * len(answer)
                logprobs[i] += list(logps[row]) if logps is not None else [0.0] * len(answer)
                response[i] = tokenizer.decode(answer, skip_special_tokens=True).strip()
                verdict = env.verify({"task": tasks[i]}, response[i])
                if not verdict.success and attempt + 1 < viter:
                    # close an answer cut at the length limit, then the verifier's reason as a user turn
                    cut = not answer or answer[-1] not in trainer.eos_token_ids
                    turn = [tokenizer.eos_token_id] * cut + feedback_turn(processor, verdict.feedback)
                    completion[i] += turn
                    mask[i] += [0] * len(turn)  # the environment's tokens: conditioned on, not trained
                    logprobs[i] += [0.0] * len(turn)
                    retry.append(i)
            todo, inputs = retry, [prompt_ids[i] + completion[i] for i in retry]
            if not todo:
                break
            if images is not None:  # the retried prompts' images, their pixels and their grown token fields
                _, input_images, input_fields = tokenize_prompts(trainer, [prompts[i] for i in todo])
                input_fields |= extend_token_fields(fields, todo, [completion[i] for i in todo])
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion,
            "env_mask": mask,
            "response": response,
            "logprobs": logprobs if trainer.use_vllm else None,
        }  # sampling logprobs: vLLM only

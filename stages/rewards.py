"""The environment inside TRL's GRPO loop: its verifier as the reward, verification iterations as a rollout.

`env_reward` is pure (no model, no trainer state). GRPOTrainer calls a reward function with the prompts, the
completions and every other dataset column as keyword lists, one entry per completion: here `task`, the JSON
the verifier needs.

`feedback_rollout` is a TRL `rollout_func` (GRPOTrainer's hook for custom generation) for verification
iterations (VIter): a failed answer gets the verifier's one-line reason as a user turn ("You failed this
trial because ...") and the model answers again, up to `viter` attempts. The completion the trainer learns
from holds every attempt with the feedback between them; `env_mask` keeps the feedback tokens out of the
loss, and `response` (the last attempt alone) is what the reward function verifies.
"""

from __future__ import annotations

from collections.abc import Callable

from stages.envs import FEEDBACK_PREFIX, Env
from stages.modeling import text_tokenizer
from stages.params import ParamError


def completion_text(completion) -> str:
    """The text of a completion, conversational ([{"role": "assistant", "content": ...}]) or plain."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


def env_reward(env: Env) -> Callable[..., list[float]]:
    def reward(completions, task, response=None, log_metric=None, **kwargs) -> list[float]:
        texts = response if response is not None else [completion_text(c) for c in completions]
        verdicts = [env.verify({"task": t}, text) for t, text in zip(task, texts, strict=True)]
        if log_metric is not None:  # logged per step next to the reward: the share of correct answers
            log_metric("success", sum(v.success for v in verdicts) / len(verdicts))
        return [v.reward for v in verdicts]

    reward.__name__ = env.name  # the trainer logs rewards/<name>/mean
    return reward


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


def prompt_text(message: dict) -> str:
    """The text of a user turn, plain or (VL, as TRL hands it to a rollout_func) a list of typed parts."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part["type"] == "text")


def extend_token_fields(fields: dict, rows: list[int], extra: list[list[int]]) -> dict:
    """The multimodal fields of the prompts `rows` (TRL's `_tokenize_prompts` output), for prompts that have
    grown by `extra` tokens: per-token fields (Qwen2-VL's mm_token_type_ids) get zeros (text) for them."""
    return {
        key: [value[i] + [0] * len(more) for i, more in zip(rows, extra, strict=True)]
        for key, value in fields.items()
        if isinstance(value, list) and value and isinstance(value[0], list)
    }


def feedback_rollout(env, tasks: dict[str, str], viter: int):
    """A TRL rollout_func: up to `viter` attempts per answer, the verifier's reason between them. A VL prompt
    keeps its image: every attempt is generated with the image fields of its own prompt."""

    def rollout_func(prompts, trainer):
        processor = trainer.processing_class
        tokenizer = text_tokenizer(processor)
        prompt_ids, images, fields = trainer._tokenize_prompts(prompts)  # TRL's own chat templating
        completion, mask, logprobs = ([[] for _ in prompts] for _ in range(3))
        response = [""] * len(prompts)
        todo = list(range(len(prompts)))
        inputs, input_images, input_fields = prompt_ids, images, fields
        for attempt in range(viter):
            # TRL's generation backend (transformers or colocated vLLM); one answer per open episode after
            # the first attempt, since every episode then has its own history.
            ids, logps = trainer._generate_single_turn(
                inputs, input_images, input_fields, trainer.num_generations if attempt == 0 else 1
            )
            retry = []
            for row, i in enumerate(todo):
                answer = list(ids[row])
                completion[i] += answer
                mask[i] += [1] * len(answer)
                logprobs[i] += list(logps[row]) if logps is not None else [0.0] * len(answer)
                response[i] = tokenizer.decode(answer, skip_special_tokens=True).strip()
                verdict = env.verify({"task": tasks[prompt_text(prompts[i][-1])]}, response[i])
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
                _, input_images, input_fields = trainer._tokenize_prompts([prompts[i] for i in todo])
                input_fields |= extend_token_fields(fields, todo, [completion[i] for i in todo])
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion,
            "env_mask": mask,
            "response": response,
            "logprobs": logprobs if trainer.use_vllm else None,
        }  # sampling logprobs: vLLM only

    return rollout_func

"""The environment's verifier as TRL's GRPO reward: pure (no model, no trainer state).

GRPOTrainer calls a reward function with the prompts, the completions and every other dataset column as
keyword lists, one entry per completion: here `task`, the JSON the verifier needs. With verification
iterations (stages/training/viter.py) the completion holds every attempt and `response`, the last attempt
alone, is what gets verified.
"""

from __future__ import annotations

from collections.abc import Callable

from stages.envs import Env


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

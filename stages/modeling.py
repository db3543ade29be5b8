"""The embedded default model (built offline) and loading of local checkpoints.

The embedded tokenizer is word-level: the environments' compact prompts put a space between every
token, so each word, number and symbol is one token and a ~1M-parameter Llama can learn the task.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedTokenizerFast

from stages.envs import FEEDBACK_PREFIX
from stages.params import ParamError

PAD, UNK, END, USER, ASSISTANT = "<pad>", "<unk>", "<|end|>", "<|user|>", "<|assistant|>"

# One user/assistant turn per message; the assistant turn ends with <|end|> (the eos token), so the
# rendered prompt is a token prefix of prompt + completion, as TRL's completion masking expects.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}" + ASSISTANT + " {{ message['content'] }} " + END + " "
    "{%- else -%}" + USER + " {{ message['content'] }} "
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}" + ASSISTANT + " {%- endif -%}"
)


def build_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is every whitespace-separated word in `texts`."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    trainer = trainers.WordLevelTrainer(special_tokens=[PAD, UNK, END, USER, ASSISTANT], min_frequency=1)
    tokenizer.train_from_iterator([*texts, FEEDBACK_PREFIX], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=END,
        additional_special_tokens=[USER, ASSISTANT],
        chat_template=CHAT_TEMPLATE,
        padding_side="left",  # generation appends on the right
    )


def build_model(
    tokenizer: PreTrainedTokenizerFast, hidden_size: int, layers: int, heads: int, max_length: int, seed: int
) -> torch.nn.Module:
    """A small Llama from a config (no weights downloaded), initialised deterministically."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_length,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def check_model_dir(path: str | Path, param: str) -> Path:
    """A local Hugging Face checkpoint with safetensors weights, or ParamError naming `param`."""
    path = Path(path)
    if not path.is_dir():
        raise ParamError(f"{param}={str(path)!r} does not exist; give a local Hugging Face model directory")
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise ParamError(f"{param}={str(path)!r} is not a model directory: needs config.json, *.safetensors")
    return path


def load_model(path: str | Path, param: str = "model.path", dtype: str | torch.dtype | None = None):
    """Tokenizer and causal LM from a local directory: offline, safetensors only, no remote code.

    `dtype` None: the checkpoint's own on GPU; float32 on CPU, where the trainers run in float32 (bf16 follows
    the hardware) and a bfloat16 checkpoint (Qwen's) would generate several times slower.
    """
    if dtype is None:
        dtype = "auto" if torch.cuda.is_available() else torch.float32
    path = check_model_dir(path, param)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, trust_remote_code=False, use_safetensors=True, dtype=dtype
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if tokenizer.chat_template is None:
        raise ParamError(f"{param}={str(path)!r} has no chat template; use an instruct/chat checkpoint")
    return tokenizer, model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

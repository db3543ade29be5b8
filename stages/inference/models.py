"""The embedded default models (built offline) and loading of local checkpoints.

The embedded tokenizer is word-level: the environments' compact prompts put a space between every
token, so each word, number and symbol is one token and a ~1M-parameter model can learn the task.
Text envs get a small Llama; vision-language envs a small Qwen2-VL (the architecture of DC-SFT's
Qwen2.5-VL, which TRL and vLLM support), so the embedded and real VL checkpoints share one code path.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from stages.core.params import ParamError
from stages.envs import FEEDBACK_PREFIX

PAD, UNK, END, USER, ASSISTANT = "<pad>", "<unk>", "<|end|>", "<|user|>", "<|assistant|>"
# Qwen2-VL's image tokens: the processor expands IMAGE_PAD to one token per merged 28x28 image patch.
VISION_START, IMAGE_PAD, VISION_END = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"
VIDEO_PAD = "<|video_pad|>"  # unused, but the processor counts the tokens that map to its id (else <unk>'s)
IMAGE = VISION_START + IMAGE_PAD + VISION_END  # an image part, as Qwen2-VL's chat template renders it

# One user/assistant turn per message; the assistant turn ends with <|end|> (the eos token), so the
# rendered prompt is a token prefix of prompt + completion, as TRL's completion masking expects. Content is
# a string or, as TRL and the rollout engine give VL prompts, a list of image and text parts.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '" + ASSISTANT + "' if message['role'] == 'assistant' else '" + USER + "' -}}"
    "{%- if message['content'] is string -%}{{- ' ' + message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{{- ' " + IMAGE + "' if part['type'] == 'image' else ' ' + part['text'] -}}"
    "{%- endfor -%}{%- endif -%}"
    "{{- ' " + END + "' if message['role'] == 'assistant' else '' -}}"
    "{%- endfor -%}"
    "{{- '" + ASSISTANT + "' if add_generation_prompt else '' -}}"
)
PATCH, MERGE = 14, 2  # Qwen2-VL's vision patch and merge sizes: one LM token per 28x28 pixels
# A VLM's vision tower (Qwen2-VL's `visual`, the merger included), by module or parameter name: it trains at
# its own rate, LoRA leaves it out, and the compute accounting counts it apart.
VISION_TOWER = r"(.*\.)?visual\..*"


def build_tokenizer(texts: Iterable[str], vision: bool = False) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is every whitespace-separated word in `texts`."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    specials = [PAD, UNK, END, USER, ASSISTANT]
    specials += [VISION_START, IMAGE_PAD, VISION_END, VIDEO_PAD] if vision else []
    trainer = trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1)
    tokenizer.train_from_iterator([*texts, FEEDBACK_PREFIX], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=END,
        additional_special_tokens=specials[3:],
        chat_template=CHAT_TEMPLATE,
        padding_side="left",  # generation appends on the right
    )


def image_only(processor_class: type) -> type:
    """The Qwen2-VL family's processor without its video processor, which needs torchvision
    (transformers loads it eagerly, huggingface/transformers#48558); images go through the PIL image
    processor. Same class name, so the saved processor_config.json loads with AutoProcessor as well."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        processor_class.__init__(self, image_processor, tokenizer, None, chat_template, **kwargs)

    return type(processor_class.__name__, (processor_class,), {"__init__": __init__})


# config.model_type -> the processor a local VL checkpoint is loaded with
VL_PROCESSORS = {"qwen2_vl": image_only(Qwen2VLProcessor), "qwen2_5_vl": image_only(Qwen2_5_VLProcessor)}


def build_processor(tokenizer: PreTrainedTokenizerFast, image_width: int, image_height: int):
    """The embedded VLM's processor: images keep their size, rounded to whole 28x28 patches."""
    area = (image_width + PATCH * MERGE) * (image_height + PATCH * MERGE)
    images = Qwen2VLImageProcessorPil(
        min_pixels=(PATCH * MERGE) ** 2, max_pixels=area, patch_size=PATCH, merge_size=MERGE
    )
    return VL_PROCESSORS["qwen2_vl"](image_processor=images, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def language_config(tokenizer, hidden_size: int, layers: int, heads: int, max_length: int) -> dict:
    """The embedded language model's shape: the Llama of the text envs, the LM inside the VL model."""
    return dict(
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


def from_config(auto_class, config, tokenizer, seed: int) -> torch.nn.Module:
    """A model initialised deterministically from `config` (no weights downloaded), stopping at eos."""
    torch.manual_seed(seed)
    model = auto_class.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_model(
    tokenizer: PreTrainedTokenizerFast, hidden_size: int, layers: int, heads: int, max_length: int, seed: int
) -> torch.nn.Module:
    """A small Llama."""
    config = LlamaConfig(**language_config(tokenizer, hidden_size, layers, heads, max_length))
    return from_config(AutoModelForCausalLM, config, tokenizer, seed)


def build_vl_model(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int,
    layers: int,
    heads: int,
    max_length: int,
    vision_hidden_size: int,
    vision_layers: int,
    seed: int,
) -> torch.nn.Module:
    """A small Qwen2-VL: a ViT over 14x14 patches, merged 2x2 into image tokens of the language model."""
    head_dim = hidden_size // heads
    if head_dim % 4:  # mrope splits head_dim / 2 rotary frequencies over time, height and width
        raise ParamError(f"model.hidden_size / model.heads={hidden_size}/{heads} must be a multiple of 4")
    section = [head_dim // 8, (head_dim // 2 - head_dim // 8) // 2]
    section.append(head_dim // 2 - sum(section))
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section}
    config = Qwen2VLConfig(
        text_config=language_config(tokenizer, hidden_size, layers, heads, max_length)
        | {"rope_parameters": rope},
        vision_config=dict(
            depth=vision_layers,
            embed_dim=vision_hidden_size,
            hidden_size=hidden_size,
            num_heads=max(1, vision_hidden_size // 32),
            patch_size=PATCH,
            spatial_merge_size=MERGE,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_PAD),
        vision_start_token_id=tokenizer.convert_tokens_to_ids(VISION_START),
        vision_end_token_id=tokenizer.convert_tokens_to_ids(VISION_END),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_PAD),
        tie_word_embeddings=True,
    )
    return from_config(AutoModelForImageTextToText, config, tokenizer, seed)


def check_model_dir(path: str | Path, param: str) -> Path:
    """A local Hugging Face checkpoint with safetensors weights, or ParamError naming `param`."""
    path = Path(path)
    if not path.is_dir():
        raise ParamError(f"{param}={str(path)!r} does not exist; give a local Hugging Face model directory")
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise ParamError(f"{param}={str(path)!r} is not a model directory: needs config.json, *.safetensors")
    return path


def is_vision_language(path: str | Path) -> bool:
    """Whether the checkpoint at `path` (already checked) is a vision-language model."""
    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    return getattr(config, "vision_config", None) is not None


def text_tokenizer(processing_class):
    """The tokenizer of a tokenizer or of a VLM processor."""
    return getattr(processing_class, "tokenizer", processing_class)


def load_model(path: str | Path, param: str = "model.path", dtype: str | torch.dtype | None = None):
    """Tokenizer (a processor for a VLM) and model from a local directory: offline, safetensors only, no
    remote code. A VLM must be of the Qwen2-VL family (Qwen2-VL, Qwen2.5-VL).

    `dtype` None: the checkpoint's own on GPU; float32 on CPU, where the trainers run in float32 (bf16 follows
    the hardware) and a bfloat16 checkpoint (Qwen's) would generate several times slower.
    """
    if dtype is None:
        dtype = "auto" if torch.cuda.is_available() else torch.float32
    path = check_model_dir(path, param)
    offline = dict(local_files_only=True, trust_remote_code=False)
    config = AutoConfig.from_pretrained(path, **offline)
    if getattr(config, "vision_config", None) is not None:
        if config.model_type not in VL_PROCESSORS:
            raise ParamError(
                f"{param}={str(path)!r} is a {config.model_type} vision-language model; the VL envs support "
                f"{', '.join(VL_PROCESSORS)} checkpoints"
            )
        processor = VL_PROCESSORS[config.model_type].from_pretrained(path, **offline)
        tokenizer, auto_model = processor.tokenizer, AutoModelForImageTextToText
    else:
        processor = tokenizer = AutoTokenizer.from_pretrained(path, **offline)
        auto_model = AutoModelForCausalLM
    model = auto_model.from_pretrained(path, **offline, use_safetensors=True, dtype=dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if processor.chat_template is None:
        raise ParamError(f"{param}={str(path)!r} has no chat template; use an instruct/chat checkpoint")
    return processor, model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

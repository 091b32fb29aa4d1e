"""HunyuanVideo's two text encoders, run through ``transformers``.

1. The language part of LLaVA-Llama-3-8B (``text_encoder/``, a ``LlamaModel``):
   the prompt is put into the official instruction template, tokenised to
   ``text_len + crop_start`` tokens (padding on the right), the hidden states
   ``hidden_state_skip_layer`` layers before the last are taken (no final
   norm), and the first ``crop_start`` positions (the template's instruction)
   are cut off, mask included. (hyvideo/text_encoder/__init__.py, constants.py)
2. CLIP ViT-L/14's text tower (``text_encoder_2/``): the pooled output of the
   prompt tokenised to 77 tokens, no template.

Each is an ``nn.Module`` whose state dict is ``model.*`` of the transformers
model, so the core loader fills it; the tokenizer is attached at load time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class PromptTemplate:
    """An instruction template with ``{}`` for the prompt; ``crop_start`` tokens of it are dropped after encoding."""

    template: str
    crop_start: int

    def __post_init__(self) -> None:
        if "{}" not in self.template:
            raise ValueError("a prompt template needs a {} placeholder for the prompt")

    def apply(self, prompt: str) -> str:
        return self.template.format(prompt)


_SYS = "<|start_header_id|>system<|end_header_id|>\n\n"
_USER = "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"

#: official templates (hyvideo/constants.py); crop_start counts Llama-3 tokens incl. <|begin_of_text|>
TEMPLATES: dict[str, PromptTemplate] = {
    "dit-llm-encode": PromptTemplate(
        _SYS + "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial "
        "relationships of the objects and background:<|eot_id|>" + _USER, 36),
    "dit-llm-encode-video": PromptTemplate(
        _SYS + "Describe the video by detailing the following aspects: "
        "1. The main content and theme of the video."
        "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
        "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
        "4. background environment, light, style and atmosphere."
        "5. camera angles, movements, and transitions used in the video:<|eot_id|>" + _USER, 95),
}

#: LLaVA-Llama-3-8B-v1_1 language model as the official preprocessing saves it (text_encoder/config.json)
LLAMA3_8B_CONFIG: dict[str, Any] = dict(
    vocab_size=128320, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
    hidden_act="silu", attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
    bos_token_id=128000, eos_token_id=128001)

#: openai/clip-vit-large-patch14 text tower (text_encoder_2/config.json ``text_config``)
CLIP_L_TEXT_CONFIG: dict[str, Any] = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
    bos_token_id=0, eos_token_id=2, pad_token_id=1)


def _on(device: torch.device | str | None):
    return torch.device(device) if device is not None else torch.device("cpu")


def load_tokenizer(folder: Path, *, padding_side: str = "right") -> Any:
    """A tokenizer saved beside the weights (``tokenizer.json``/``vocab.json``...), never from the network."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), padding_side=padding_side, local_files_only=True)


class LLMTextEncoder(nn.Module):
    """The LLaVA-Llama-3 language model (``LlamaModel``) and the official templating around it."""

    def __init__(self, config: Mapping[str, Any] = LLAMA3_8B_CONFIG, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        from transformers import LlamaConfig, LlamaModel

        cfg = LlamaConfig(**dict(config))
        with _on(device):
            self.model = LlamaModel(cfg)
        if dtype is not None:
            self.model.to(dtype)
        self.tokenizer: Any = None

    def init_non_persistent(self, device: torch.device) -> None:
        """The rotary tables are not in checkpoints: rebuild them on ``device`` after loading."""
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        with torch.device(device):
            self.model.rotary_emb = LlamaRotaryEmbedding(self.model.config)

    def tokenize(self, prompts: Sequence[str], template: PromptTemplate, text_len: int) -> dict[str, torch.Tensor]:
        if self.tokenizer is None:
            raise RuntimeError("the LLM text encoder has no tokenizer; load it from a checkpoint folder")
        return self.tokenizer([template.apply(p) for p in prompts], truncation=True,
                              max_length=text_len + template.crop_start, padding="max_length",
                              return_attention_mask=True, return_tensors="pt")

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], template: PromptTemplate, *, text_len: int = 256,
               skip_layer: int = 2, apply_final_norm: bool = False,
               device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt states (B, text_len, hidden) and mask (B, text_len) after the template crop."""
        device = device or next(self.parameters()).device
        tokens = self.tokenize(prompts, template, text_len)
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        states = out.hidden_states[-(skip_layer + 1)]
        if skip_layer > 0 and apply_final_norm:
            states = self.model.norm(states)
        crop = template.crop_start
        return states[:, crop:], mask[:, crop:]


class CLIPTextEncoder(nn.Module):
    """CLIP-L's text tower: the pooled (end-of-text) feature of each prompt."""

    def __init__(self, config: Mapping[str, Any] = CLIP_L_TEXT_CONFIG, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel

        with _on(device):
            self.model = CLIPTextModel(CLIPTextConfig(**dict(config)))
        if dtype is not None:
            self.model.to(dtype)
        self.tokenizer: Any = None

    def init_non_persistent(self, device: torch.device) -> None:
        tower = getattr(self.model, "text_model", self.model)  # transformers 4.x wraps the tower, 5.x does not
        emb = tower.embeddings
        n = emb.position_embedding.num_embeddings
        emb.position_ids = torch.arange(n, device=device).expand((1, -1))

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], *, max_length: int = 77,
               device: torch.device | None = None) -> torch.Tensor:
        if self.tokenizer is None:
            raise RuntimeError("the CLIP text encoder has no tokenizer; load it from a checkpoint folder")
        device = device or next(self.parameters()).device
        tokens = self.tokenizer(list(prompts), truncation=True, max_length=max_length, padding="max_length",
                                return_attention_mask=True, return_tensors="pt")
        out = self.model(input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device))
        return out.pooler_output


def _canon(name: str) -> str:
    """A name with transformers' version-dependent wrappers removed (``model.`` of a CausalLM,
    ``text_model.``/``vision_model.`` of CLIP towers, ``model.`` of a LLaVA 4.x/5.x checkpoint)."""
    for old, new in (("language_model.model.", "language_model."), ("model.language_model.", "language_model."),
                     ("model.vision_tower.", "vision_tower."),
                     ("model.multi_modal_projector.", "multi_modal_projector."),
                     ("vision_tower.vision_model.", "vision_tower."), ("text_model.", "")):
        if name.startswith(old):
            name = new + name[len(old):]
    if name.startswith("model.") and not name.startswith("model.language_model."):
        name = name[len("model."):]
    return name


def match_names(ckpt_names: Sequence[str], module_names: Sequence[str]) -> dict[str, str | None]:
    """Checkpoint name -> module name by their canonical forms; checkpoint tensors the module lacks (an LM
    head, a vision tower, position-id buffers) map to None and are skipped. The core loader still
    insists that every module tensor is found."""
    table = {_canon(m): m for m in module_names}
    return {n: table.get(_canon(n)) for n in ckpt_names}


def module_names(module: nn.Module) -> list[str]:
    return list(module.state_dict().keys())

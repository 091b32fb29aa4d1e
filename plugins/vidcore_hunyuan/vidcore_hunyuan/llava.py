"""HunyuanVideo-I2V's multimodal text encoder: LLaVA-Llama-3-8B with the reference image in the prompt.

The official I2V code (hyvideo/text_encoder ``llm-i2v``) puts the prompt in a
template that starts with an ``<image>`` token, runs
``LlavaForConditionalGeneration`` on it with the CLIP-preprocessed image (the
``<image>`` token becomes the projector's 576 image features), takes the
hidden states two layers before the last, and then keeps

- the image features (positions 5..580), every ``interleave``-th one (4 for
  the released token-replace model), all valid;
- the prompt tokens: from the template's ``crop_start`` up to the assistant
  header, plus whatever follows it (the 4 header tokens are dropped; the
  assistant header is found from the last "\\n\\n" token, id 271),

image features first. We expand the ``<image>`` token ourselves (as the
transformers version the official code used did internally) and run
``LlavaModel`` (no LM head).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .text import LLAMA3_8B_CONFIG, PromptTemplate


@dataclass(frozen=True)
class I2VTemplate(PromptTemplate):
    """A template with an ``<image>`` slot: where the image features sit and how the reply header is found."""

    image_emb_start: int = 5
    image_emb_len: int = 576
    double_return_token_id: int = 271  # "\n\n" in the Llama-3 tokenizer
    interleave: int = 4


_I2V_VIDEO = (
    "<|start_header_id|>system<|end_header_id|>\n\n<image>\nDescribe the video by detailing the following aspects "
    "according to the reference image: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>\n\n"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n")

#: hyvideo/constants.py (HunyuanVideo-I2V) "dit-llm-encode-video-i2v"; interleave 4 for token_replace
I2V_TEMPLATES: dict[str, I2VTemplate] = {"dit-llm-encode-video-i2v": I2VTemplate(_I2V_VIDEO, 103)}

#: xtuner/llava-llama-3-8b-v1_1-transformers (vision tower CLIP ViT-L/14-336, 2-layer GELU projector)
LLAVA_LLAMA3_CONFIG: dict[str, Any] = dict(
    text_config={"model_type": "llama", **LLAMA3_8B_CONFIG},
    vision_config=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                       num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14,
                       projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5),
    image_token_index=128257, projector_hidden_act="gelu", vision_feature_layer=-2,
    vision_feature_select_strategy="default", image_seq_length=576)


@dataclass
class _Processors:
    tokenizer: Any = None
    image_processor: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class LlavaTextEncoder(nn.Module):
    """``LlavaModel`` (language model + CLIP vision tower + projector) with the official I2V prompt handling."""

    def __init__(self, config: Mapping[str, Any] = LLAVA_LLAMA3_CONFIG, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        from transformers import LlavaConfig, LlavaModel

        with torch.device(device or "cpu"):
            self.model = LlavaModel(LlavaConfig(**dict(config)))
        if dtype is not None:
            self.model.to(dtype)
        self.tokenizer: Any = None
        self.image_processor: Any = None

    def init_non_persistent(self, device: torch.device) -> None:
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        lm = self.model.language_model
        with torch.device(device):
            lm.rotary_emb = LlamaRotaryEmbedding(lm.config)
        tower = self.model.vision_tower
        emb = getattr(tower, "vision_model", tower).embeddings
        emb.position_ids = torch.arange(emb.num_positions, device=device).expand((1, -1))

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    def expand(self, ids: torch.Tensor, mask: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
        """Replace each sample's ``<image>`` token by ``n`` image slots; returns ids, mask, position ids."""
        out_ids, out_mask = [], []
        for row, m in zip(ids, mask):
            at = (row == self.image_token_id).nonzero().flatten()
            if len(at) != 1:
                raise ValueError(f"the I2V template must hold exactly one <image> token, found {len(at)}")
            i = int(at[0])
            out_ids.append(torch.cat([row[:i], row.new_full((n,), self.image_token_id), row[i + 1:]]))
            out_mask.append(torch.cat([m[:i], m.new_ones(n), m[i + 1:]]))
        ids2, mask2 = torch.stack(out_ids), torch.stack(out_mask)
        pos = (mask2.cumsum(-1) - 1).masked_fill(mask2 == 0, 1)
        return ids2, mask2, pos

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], pixel_values: torch.Tensor, template: I2VTemplate, *,
               text_len: int = 256, skip_layer: int = 2,
               device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Image+prompt states (B, L, hidden) and mask, image features first (official ``encode`` i2v branch)."""
        if self.tokenizer is None:
            raise RuntimeError("the I2V text encoder has no tokenizer; load it from a checkpoint folder")
        device = device or next(self.parameters()).device
        tokens = self.tokenizer([template.apply(p) for p in prompts], truncation=True,
                                max_length=text_len + template.crop_start, padding="max_length",
                                return_attention_mask=True, return_tensors="pt")
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        n_img = template.image_emb_len
        ids_x, mask_x, pos = self.expand(ids, mask, n_img)
        pix = pixel_values.to(device, next(self.model.vision_tower.parameters()).dtype)
        pix = pix.expand(len(prompts), *pix.shape[1:]) if pix.shape[0] == 1 else pix
        out = self.model(input_ids=ids_x, attention_mask=mask_x, position_ids=pos, pixel_values=pix,
                         output_hidden_states=True)
        states = out.hidden_states[-(skip_layer + 1)]

        crop, shift = template.crop_start, n_img - 1
        texts, masks = [], []
        for b in range(ids.shape[0]):
            returns = (ids[b] == template.double_return_token_id).nonzero().flatten().tolist()
            last = returns[-1] if len(returns) >= 4 else ids.shape[1]  # truncated prompt: no reply header left
            texts.append(torch.cat([states[b, crop + shift:last - 4 + shift], states[b, last + shift:]]))
            masks.append(torch.cat([mask[b, crop:last - 4], mask[b, last:]]))
        start = template.image_emb_start
        image = states[:, start:start + n_img][:, ::template.interleave]
        image_mask = mask.new_ones(image.shape[:2])
        return torch.cat([image, torch.stack(texts)], dim=1), torch.cat([image_mask, torch.stack(masks)], dim=1)

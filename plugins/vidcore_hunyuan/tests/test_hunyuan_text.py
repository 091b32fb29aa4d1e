"""Text encoders against diffusers' HunyuanVideoPipeline prompt encoding (tiny random Llama/CLIP, tiny local
tokenizers): templating, template crop, hidden-state skip layer, mask and CLIP pooled output must be identical."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hunyuan_tiny import TINY_CLIP, TINY_LLAMA, tiny_clip_tokenizer, tiny_llm_tokenizer
from vidcore_hunyuan.text import TEMPLATES, CLIPTextEncoder, LLMTextEncoder, PromptTemplate, match_names

diffusers = pytest.importorskip("diffusers")
PROMPTS = ["a cat surfing a wave at sunset", "the video of a cat"]


def _encoders():
    torch.manual_seed(0)
    tok = tiny_llm_tokenizer(" ".join(PROMPTS))
    llm = LLMTextEncoder({**TINY_LLAMA, "vocab_size": len(tok)}).eval()
    llm.tokenizer = tok
    ctok = tiny_clip_tokenizer()
    clip = CLIPTextEncoder({**TINY_CLIP, "vocab_size": len(ctok), "eos_token_id": ctok.eos_token_id,
                            "bos_token_id": ctok.bos_token_id, "pad_token_id": ctok.pad_token_id}).eval()
    clip.tokenizer = ctok
    tpl = TEMPLATES["dit-llm-encode-video"]
    crop = len(tok(tpl.template.split("{}")[0])["input_ids"])  # 95 with the real Llama-3 tokenizer
    return llm, clip, dataclasses.replace(tpl, crop_start=crop)


def test_prompt_encoding_matches_diffusers_pipeline():
    llm, clip, tpl = _encoders()
    pipe = diffusers.HunyuanVideoPipeline(text_encoder=llm.model, tokenizer=llm.tokenizer, transformer=None,
                                          vae=None, scheduler=None, text_encoder_2=clip.model,
                                          tokenizer_2=clip.tokenizer)
    text_len = 24
    with torch.no_grad():
        want, want_pooled, want_mask = pipe.encode_prompt(
            PROMPTS, prompt_template={"template": tpl.template, "crop_start": tpl.crop_start},
            device=torch.device("cpu"), max_sequence_length=text_len)
    states, mask = llm.encode(PROMPTS, tpl, text_len=text_len)
    pooled = clip.encode(PROMPTS)
    assert states.shape == (2, text_len, TINY_LLAMA["hidden_size"]) and mask.shape == (2, text_len)
    assert torch.equal(mask, want_mask)
    torch.testing.assert_close(states, want, rtol=0, atol=0)
    torch.testing.assert_close(pooled, want_pooled, rtol=0, atol=1e-6)
    # the crop keeps exactly the prompt (+ <|eot_id|>): 7 + 1 and 5 + 1 valid tokens
    assert mask.sum(1).tolist() == [8, 6]


def test_skip_layer_and_crop_are_the_official_ones():
    llm, _, tpl = _encoders()
    tokens = llm.tokenize(PROMPTS[:1], tpl, 16)
    ids = tokens["input_ids"][0]
    # right after the crop comes the first word of the prompt
    assert ids[tpl.crop_start] == llm.tokenizer.convert_tokens_to_ids("a")
    assert ids[tpl.crop_start - 1] != llm.tokenizer.convert_tokens_to_ids("a")
    with torch.no_grad():
        full = llm.model(**tokens, output_hidden_states=True).hidden_states
        states, _ = llm.encode(PROMPTS[:1], tpl, text_len=16)
    assert torch.equal(states, full[-3][:, tpl.crop_start:])  # hidden_state_skip_layer = 2
    assert not torch.allclose(states, full[-1][:, tpl.crop_start:])


def test_key_maps_accept_official_and_transformers_folders():
    llm, clip, _ = _encoders()
    mods = list(llm.state_dict())
    # text_encoder/ as the official preprocessing saved it (a LlamaForCausalLM: model.* + lm_head) ...
    old = {n: "model." + n[len("model."):] for n in mods}
    assert match_names(list(old) + ["lm_head.weight"], mods) == {**{k: k for k in mods}, "lm_head.weight": None}
    # ... or a bare LlamaModel
    bare = [n[len("model."):] for n in mods]
    assert match_names(bare, mods) == dict(zip(bare, mods))
    # text_encoder_2/: the full openai CLIPModel (text_model.* beside a vision tower and projections)
    cmods = list(clip.state_dict())
    ck = ["text_model." + n.split("model.", 1)[1].removeprefix("text_model.") for n in cmods]
    extra = ["vision_model.post_layernorm.weight", "text_projection.weight", "logit_scale",
             "text_model.embeddings.position_ids"]
    got = match_names(ck + extra, cmods)
    assert [got[k] for k in ck] == cmods and all(got[k] is None for k in extra)


def test_official_template_crop_values():
    assert TEMPLATES["dit-llm-encode-video"].crop_start == 95
    assert TEMPLATES["dit-llm-encode"].crop_start == 36
    with pytest.raises(ValueError):
        PromptTemplate("no placeholder", 3)

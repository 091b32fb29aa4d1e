"""Tiny configurations shared by the tests (registered only here, never in the plugin)."""

from __future__ import annotations

from vidcore_hunyuan.bench import diffusers_config as diffusers_dit_config  # noqa: F401
from vidcore_hunyuan.params import DiTParams, VAEParams

TINY_DIT = DiTParams(in_channels=4, out_channels=4, hidden_size=64, heads=2, mlp_ratio=4.0, double_blocks=2,
                     single_blocks=2, refiner_blocks=2, rope_dims=(8, 12, 12), text_dim=48, pooled_dim=24)


TINY_VAE = VAEParams(block_out_channels=(8, 16, 32, 32), layers_per_block=1, norm_groups=4, latent_channels=4)


# -- text encoders: tiny random transformers models and tokenizers built locally (no downloads) --------------
TINY_LLAMA = dict(vocab_size=0, hidden_size=48, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=500000.0,
                  hidden_act="silu", tie_word_embeddings=False)
TINY_CLIP = dict(vocab_size=0, hidden_size=24, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=24)
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "[UNK]"]


def tiny_llm_tokenizer(extra_text: str = "", i2v: bool = False):
    """A word-level tokenizer that knows the official templates' words and the Llama-3 special tokens
    (for I2V also ``<image>`` and a "\n\n" token, which the official reply-header search relies on)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from vidcore_hunyuan.llava import I2V_TEMPLATES
    from vidcore_hunyuan.text import TEMPLATES

    pre = pre_tokenizers.Whitespace()
    words: list[str] = []
    specials = LLAMA_SPECIALS + (["<image>"] if i2v else [])
    text = " ".join(t.template for t in [*TEMPLATES.values(), *I2V_TEMPLATES.values()]) + " " + extra_text
    for special in specials:
        text = text.replace(special, " ")
    for w, _ in pre.pre_tokenize_str(text):
        if w not in words:
            words.append(w)
    vocab = {t: i for i, t in enumerate(specials + words + (["\n\n"] if i2v else []))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    tok.add_special_tokens(specials)
    if i2v:
        tok.add_tokens([AddedToken("\n\n", normalized=False)])
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[
        ("<|begin_of_text|>", vocab["<|begin_of_text|>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                   pad_token="<|end_of_text|>", unk_token="[UNK]", padding_side="right")


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def tiny_clip_tokenizer():
    """A character-level CLIP BPE tokenizer (a handful of merges); end-of-text has the highest id, as in CLIP."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    merges = [("t", "h"), ("th", "e</w>"), ("a", "t</w>"), ("c", "at</w>")]
    merged = ["th", "the</w>", "at</w>", "cat</w>"]
    vocab_list = chars + [c + "</w>" for c in chars] + merged + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(vocab_list)}
    return CLIPTokenizer(vocab=vocab, merges=merges)


# -- a tiny backend and a tiny random checkpoint in the official folder layout --------------------------------
def tiny_t2v_spec(tokenizer, name: str = "hunyuan-tiny-t2v"):
    import dataclasses

    from vidcore_hunyuan.backends import NEGATIVE, HunyuanSpec, _defaults
    from vidcore_hunyuan.text import TEMPLATES

    def tiny(tpl):
        return dataclasses.replace(tpl, crop_start=len(tokenizer(tpl.template.split("{}")[0])["input_ids"]))

    ctok = tiny_clip_tokenizer()
    clip = {**TINY_CLIP, "vocab_size": len(ctok), "eos_token_id": ctok.eos_token_id, "bos_token_id": ctok.bos_token_id,
            "pad_token_id": ctok.pad_token_id}
    return HunyuanSpec(name, "tiny random HunyuanVideo (tests only)", ("t2v",), _defaults(7.0, NEGATIVE),
                       dit=TINY_DIT, vae=TINY_VAE, llm={**TINY_LLAMA, "vocab_size": len(tokenizer)}, clip=clip,
                       template=tiny(TEMPLATES["dit-llm-encode-video"]),
                       image_template=tiny(TEMPLATES["dit-llm-encode"]),
                       text_len=24, sizes=((64, 48), (48, 64)))


def write_tiny_checkpoint(root, spec, llm_tokenizer, seed: int = 0, text_model=None):
    """Random weights for ``spec`` saved as the official release lays them out (wrappers included)."""
    import json
    from pathlib import Path

    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaForCausalLM
    from vidcore_hunyuan.dit import HunyuanVideoDiT
    from vidcore_hunyuan.vae import HunyuanVideoVAE

    root = Path(root)
    torch.manual_seed(seed)
    d = root / spec.dit_folder
    (d / "transformers").mkdir(parents=True)
    (d / "vae").mkdir(parents=True)
    dit = HunyuanVideoDiT(spec.dit)
    with torch.no_grad():  # the official init zeroes modulations and the final layer: make everything matter
        for p in dit.parameters():
            p.copy_(torch.randn(p.shape) * (0.5 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.05) + (p.ndim == 1) * 0.0)
        for name, p in dit.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
    torch.save({"module": dit.state_dict()}, d / "transformers" / "mp_rank_00_model_states.pt")
    vae = HunyuanVideoVAE(spec.vae)
    torch.save({"state_dict": {f"vae.{k}": v for k, v in vae.state_dict().items()}}, d / "vae" / "pytorch_model.pt")
    (d / "vae" / "config.json").write_text(json.dumps({"latent_channels": spec.vae.latent_channels,
                                                        "block_out_channels": list(spec.vae.block_out_channels)}))
    (text_model() if text_model else LlamaForCausalLM(LlamaConfig(**spec.llm))).save_pretrained(root / spec.text_folder)
    llm_tokenizer.save_pretrained(root / spec.text_folder)
    CLIPTextModel(CLIPTextConfig(**spec.clip)).save_pretrained(root / "text_encoder_2")
    tiny_clip_tokenizer().save_pretrained(root / "text_encoder_2")
    return root


TINY_VISION = dict(model_type="clip_vision_model", hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                   num_attention_heads=2, image_size=28, patch_size=14, projection_dim=16, hidden_act="quick_gelu")


def tiny_i2v_parts(prompt_words: str = ""):
    """Tokenizer, LLaVA config, I2V template and CLIP image processor for a tiny LLaVA (4 image tokens)."""
    import dataclasses

    from transformers import CLIPImageProcessor
    from vidcore_hunyuan.llava import I2V_TEMPLATES

    tok = tiny_llm_tokenizer(prompt_words, i2v=True)
    cfg = dict(text_config={"model_type": "llama", **TINY_LLAMA, "vocab_size": len(tok)}, vision_config=TINY_VISION,
               image_token_index=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id,
               projector_hidden_act="gelu", vision_feature_layer=-2, vision_feature_select_strategy="default",
               image_seq_length=4)
    base = I2V_TEMPLATES["dit-llm-encode-video-i2v"]
    ids = tok(base.template.split("{}")[0])["input_ids"]
    tpl = dataclasses.replace(base, crop_start=len(ids), image_emb_start=ids.index(cfg["image_token_index"]),
                              image_emb_len=4, interleave=2, double_return_token_id=tok.convert_tokens_to_ids("\n\n"))
    proc = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    return tok, cfg, tpl, proc


def tiny_i2v_spec(tok, cfg, tpl, name: str = "hunyuan-tiny-i2v"):
    import dataclasses

    from vidcore_hunyuan.backends import NEGATIVE_I2V, HunyuanSpec, _defaults

    ctok = tiny_clip_tokenizer()
    clip = {**TINY_CLIP, "vocab_size": len(ctok), "eos_token_id": ctok.eos_token_id, "bos_token_id": ctok.bos_token_id,
            "pad_token_id": ctok.pad_token_id}
    return HunyuanSpec(name, "tiny random HunyuanVideo-I2V (tests only)", ("i2v",), _defaults(7.0, NEGATIVE_I2V),
                       dit=dataclasses.replace(TINY_DIT, token_replace=True), vae=TINY_VAE, llm=cfg, clip=clip,
                       dit_folder="hunyuan-video-i2v-720p", text_folder="text_encoder_i2v", template=tpl,
                       text_len=20, stability=True, i2v_bases={"tiny": 48}, bucket_stride=16)


def write_tiny_i2v_checkpoint(root, spec, tok, proc, seed: int = 0):
    from pathlib import Path

    from transformers import LlavaConfig, LlavaForConditionalGeneration

    root = Path(root)
    write_tiny_checkpoint(root, spec, tok, seed, text_model=lambda: LlavaForConditionalGeneration(
        LlavaConfig(**spec.llm)))
    proc.save_pretrained(root / spec.text_folder)
    return root

"""umT5 encoder: full-size names vs the official manifest, tiny-config parity with transformers' UMT5EncoderModel
through our key map, and the tokenizer wrapper (a tiny tokenizer built locally, no download)."""

import pytest
import torch
from vidcore_wan22 import keymaps
from vidcore_wan22.configs import T5, T5Params
from vidcore_wan22.t5 import UMT5Encoder, WanTokenizer
from wan22_helpers import manifest, one_thread  # noqa: F401


def test_full_size_matches_manifest():
    with torch.device("meta"):
        enc = UMT5Encoder(T5["umt5-xxl"])
    ours = {k: list(v.shape) for k, v in enc.state_dict().items()}
    ref = manifest("wan_umt5_xxl.json")
    assert ours == ref["tensors"] and list(ours) == list(ref["tensors"])
    assert sum(v.numel() for v in enc.state_dict().values()) == ref["params"]


TINY = T5Params(vocab=50, dim=32, dim_attn=32, dim_ffn=48, num_heads=4, num_layers=2, num_buckets=8,
                max_distance=16, text_len=24)


def _hf(p: T5Params):
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(vocab_size=p.vocab, d_model=p.dim, d_kv=p.dim_attn // p.num_heads, d_ff=p.dim_ffn,
                     num_layers=p.num_layers, num_heads=p.num_heads, relative_attention_num_buckets=p.num_buckets,
                     relative_attention_max_distance=p.max_distance, feed_forward_proj="gated-gelu",
                     dropout_rate=0.0, layer_norm_epsilon=p.eps)
    cfg._attn_implementation = "eager"  # the written-out T5 attention (the official arithmetic), not SDPA
    return UMT5EncoderModel(cfg).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiny_parity_with_transformers(dtype):
    torch.manual_seed(0)
    ours = UMT5Encoder(TINY).eval()
    with torch.no_grad():
        for t in ours.parameters():
            t.copy_(torch.randn_like(t) * 0.3)
    ref = _hf(TINY)
    sd = {keymaps.t5_to_transformers(k): v for k, v in ours.state_dict().items()}
    sd["encoder.embed_tokens.weight"] = sd["shared.weight"]
    ref.load_state_dict(sd, strict=True)
    assert {keymaps.t5_from_transformers(k) for k in sd} - {None} == set(ours.state_dict())
    ours.to(dtype), ref.to(dtype)
    ids = torch.randint(0, TINY.vocab, (2, TINY.text_len))
    mask = torch.zeros(2, TINY.text_len, dtype=torch.long)
    mask[0, :7], mask[1, :20] = 1, 1
    with torch.no_grad():
        a = ours(ids, mask)
        b = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        enc = ours.encode(ids, mask)
    valid = mask.bool()
    if dtype == torch.float32:
        torch.testing.assert_close(a[valid], b[valid], rtol=1e-5, atol=1e-5)
    else:  # the same operations in the same order: bit-identical in bf16
        assert torch.equal(a[valid], b[valid])
    assert torch.all(enc[~valid] == 0) and torch.equal(enc[valid], a[valid])


def test_relative_buckets_match_transformers():
    from transformers.models.umt5.modeling_umt5 import UMT5Attention

    ours = UMT5Encoder(TINY).blocks[0].pos_embedding
    rel = torch.arange(30)[None, :] - torch.arange(30)[:, None]
    from transformers import UMT5Config

    attn = UMT5Attention(UMT5Config(relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                    d_model=8, d_kv=2, num_heads=4), has_relative_attention_bias=True)
    ref = attn._relative_position_bucket(rel)
    assert torch.equal(ours.buckets(30, 30, torch.device("cpu")), ref)


def _tiny_tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "cat": 4, "surfs": 5, "&": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)


def test_tokenizer_pads_cleans_and_masks(tmp_path):
    pytest.importorskip("ftfy")
    _tiny_tokenizer(tmp_path / "google" / "umt5-xxl")
    tok = WanTokenizer(tmp_path / "google" / "umt5-xxl", text_len=8)
    ids, mask = tok(["  a   cat\n surfs &amp;amp; ", "cat"])
    assert ids.shape == mask.shape == (2, 8)
    assert ids[0].tolist() == [3, 4, 5, 6, 1, 0, 0, 0]  # whitespace collapsed, HTML unescaped twice, </s> added
    assert mask[0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0] and mask[1].sum() == 2


def test_tokenizer_missing_folder_is_one_line_error(tmp_path):
    from vidcore.errors import CheckpointError

    with pytest.raises(CheckpointError, match="google/umt5-xxl"):
        WanTokenizer(tmp_path / "nope")

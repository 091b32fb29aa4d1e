"""What Wan2.2 knows about speed-ups: LoRA names of other layouts, TeaCache fits, and the Lightning preset.

- LoRA key map: diffusers-named Wan LoRAs (``transformer.blocks.N.attn1.to_q``...) map to our
  (official) names through `keymaps.dit_from_diffusers`; official/ComfyUI/kohya/musubi names
  need no map (the core resolves prefixes and underscores).
- TeaCache: ali-vilab/TeaCache publishes fits for Wan2.1 (``TeaCache4Wan2.1/teacache_generate.py``,
  commit 7c10efc): the ``use_ret_steps`` fits compare ``e0``, the time projection the blocks
  receive as ``e`` (our stack's keyword), with the first 5 steps always computed. No fit for the
  Wan2.2 experts is published; the A14B experts have the Wan2.1-14B architecture, so its fits are
  used and labelled as such. The TI2V-5B fit LightX2V publishes (``configs/caching/teacache/
  wan_ti2v_tea_720p.json``) is on the time *embedding*, which the block stack does not see, so the
  5B gets none (the cache then compares the stack input, unscaled).
- Lightning: see `PRESETS`.
"""

from __future__ import annotations

from typing import Any

from vidcore.presets import GenerationPreset

from . import keymaps

TEACACHE_SOURCE = ("https://github.com/ali-vilab/TeaCache/blob/7c10efc4702c6b619f47805f7abe4a7a08085aa0/"
                   "TeaCache4Wan2.1/teacache_generate.py (use_ret_steps fits, signal e0, ret_steps 5)")
#: TeaCache4Wan2.1 ``use_ret_steps`` coefficients (highest power first), by the Wan2.1 model they were fitted on
WAN21_RET_FITS = {
    "t2v-14B": [-3.03318725e+05, 4.90537029e+04, -2.65530556e+03, 5.87365115e+01, -3.15583525e-01],
    "i2v-14B-480P": [2.57151496e+05, -3.54229917e+04, 1.40286849e+03, -1.35890334e+01, 1.32517977e-01],
    "i2v-14B-720P": [8.10705460e+03, 2.13393892e+03, -3.72934672e+02, 1.66203073e+01, -4.17769401e-02],
}


def lora_key_map(names: list[str]) -> dict[str, str]:
    """diffusers WanTransformer3DModel names -> ours, for the names that are diffusers'."""
    out = {}
    for name in names:
        try:
            out[name] = keymaps.dit_from_diffusers(name)
        except KeyError:
            continue
    return out


def _e0(state: tuple, kwargs: dict) -> Any:
    return kwargs["e"]  # (B, Fm, 6, dim) float32: TeaCache's "modulated input" with use_ret_steps


def step_cache_options(backend_name: str, kind: str, request: Any) -> dict[str, Any]:
    if kind != "teacache" or "a14b" not in backend_name:
        return {}
    if "i2v" in backend_name:
        fit = "i2v-14B-720P" if request.width * request.height > 832 * 480 else "i2v-14B-480P"
    else:
        fit = "t2v-14B"
    return {"signal": _e0, "coefficients": WAN21_RET_FITS[fit], "warmup": 5,
            "source": f"TeaCache's Wan2.1 {fit} fit (no Wan2.2 fit is published): {TEACACHE_SOURCE}"}


LIGHTNING_SOURCE = (
    "https://github.com/ModelTC/Wan2.2-Lightning (commit 92efeb4): README: 4 steps without CFG; "
    "wan/configs/wan_t2v_A14B.py and wan_i2v_A14B.py: sample_steps 4, sample_shift 5.0, sample_guide_scale "
    "(1.0, 1.0), boundary 0.875 / 0.900 (the base model's); generate.py: euler solver, 'used in distillation'; "
    "wan/utils/fm_solvers_euler.py: sigmas linspace(1, 0, steps + 1) shifted, x += (sigma_next - sigma) * v")
_LIGHTNING = {"steps": 4, "sampler": "flow_euler", "schedule": "flow", "schedule_options": {"grid": "linspace"},
              "shift": 5.0, "guidance": {"high_noise": 1.0, "low_noise": 1.0}}
PRESETS = {
    "lightning": GenerationPreset(
        description="Wan2.2-Lightning: the step-distilled LoRA pair, 4 Euler steps, no CFG (one pass a step)",
        settings={name: dict(_LIGHTNING) for name in (
            "wan2.2-t2v-a14b", "wan2.2-t2v-a14b-diffusers", "wan2.2-i2v-a14b", "wan2.2-i2v-a14b-diffusers")},
        source=LIGHTNING_SOURCE,
        loras=("https://huggingface.co/lightx2v/Wan2.2-Lightning: T2V Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1/, "
               "I2V Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1/; pass DIR/high_noise_model.safetensors@high_noise "
               "and DIR/low_noise_model.safetensors@low_noise"),
    ),
}

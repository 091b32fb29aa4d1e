"""The core's memory presets for ``--memory``, named after the official flags they replace.

Presets are `PolicySpec`s and add up with ``+``: ``--memory offload+fp8``,
``--memory stream+t5-cpu+bf16`` (which is what ``low-vram`` is). This table is
what `vidcore.builtins` hands to the ``register_memory_presets`` hook; lookup by
name is `vidcore.memory.lookup`, in the one registry plugins add to.
"""

from __future__ import annotations

import torch

from .composed import PolicySpec

_STREAM = PolicySpec("stream", rules={"denoiser": "stream"}, ahead=2)
_T5_CPU = PolicySpec("t5-cpu", rules={"text_encoder": "cpu"})
_BF16 = PolicySpec("bf16", dtype=torch.bfloat16)

BUILTIN_PRESETS: dict[str, PolicySpec] = {
    "resident": PolicySpec("resident"),
    # one component on the accelerator at a time (official --offload_model True / --use-cpu-offload)
    "offload": PolicySpec("offload", rules={"*": "offload"}),
    "t5-cpu": _T5_CPU,
    "bf16": _BF16,
    "fp16": PolicySpec("fp16", dtype=torch.float16),
    "fp32": PolicySpec("fp32", dtype=torch.float32),
    "fp8": PolicySpec("fp8", dtype=torch.bfloat16, fp8=("denoiser",)),
    "stream": _STREAM,
    "vae-tiling": PolicySpec("vae-tiling", vae_tiling=True),
    "low-vram": PolicySpec("low-vram", batched_guidance=False, vae_tiling=True) + _STREAM + _T5_CPU + _BF16,
}

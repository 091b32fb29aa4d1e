"""Fused elementwise operations of video DiTs: one function per op, used by every model.

Each op is defined by its plain-torch reference in `vidcore.kernels.reference`.
Where CUDA and Triton are present the dispatcher may route to a Triton kernel
with the same name in `vidcore.kernels.triton_<op>`; otherwise the reference runs.
"""

from .reference import gated_residual, layer_norm, norm_modulate, rms_norm, rope_apply, rope_freqs_3d

__all__ = ["gated_residual", "layer_norm", "norm_modulate", "rms_norm", "rope_apply", "rope_freqs_3d"]

"""fp8 weight storage: e4m3 weights with one scale per output channel, computed in bf16 (or the load dtype).

Why per output channel: a linear layer's rows differ in magnitude by orders
of magnitude in DiTs (modulation and output projections especially), so one
scale per tensor wastes most of e4m3's 3 mantissa bits on small rows. With a
scale per row, ``W[o, :] ~= q[o, :] * s[o]`` and the layer computes
``(x @ q.T) * s + b``: the scale multiplies the output, so dequantising costs
one cast of the weight and no extra pass over it.

`quantize_fp8_` converts a module's ``nn.Linear`` layers in place (the same
module objects, so hooks, LoRA adapters and memory units keep working);
`fp8_error_table` reports, per layer, how far fp8 storage is from bf16.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale): e4m3 weights and float32 per-output-channel scales with ``w ~= q * scale[:, None]``."""
    w32 = w.detach().float()
    amax = w32.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    # scales exactly representable in bf16, so multiplying a bf16 output by them adds no rounding
    scale = scale.to(torch.bfloat16).float()
    q = (w32 / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.float() * scale[:, None]).to(dtype)


class FP8Linear(nn.Linear):
    """An ``nn.Linear`` whose weight is stored in e4m3 with per-output-channel ``weight_scale``.

    Instances are made by `quantize_linear_` (which converts an existing
    layer in place); it stays an ``nn.Linear`` so code that looks for linear
    layers (LoRA) still finds it.
    """

    compute_dtype: torch.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.compute_dtype
        if dtype == torch.float16:
            # fp16 tops out at 65504: x @ q.T with q up to 448 overflows before the scale could shrink it
            # (a flat, all-NaN video), so the weight is dequantised first and the product stays in range
            w = (self.weight.float() * self.weight_scale[:, None]).to(dtype)
            y = F.linear(x.to(dtype), w)
        else:
            y = F.linear(x.to(dtype), self.weight.to(dtype))
            y = y * self.weight_scale.to(dtype)
        if self.bias is not None:
            y = y + self.bias.to(dtype)
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", fp8_e4m3, compute_dtype={self.compute_dtype}"


def quantize_linear_(linear: nn.Linear, compute_dtype: torch.dtype | None = None,
                     work_device: torch.device | None = None) -> tuple[float, float]:
    """Convert ``linear`` to `FP8Linear` in place; return (relative Frobenius error, max abs error) of W.

    ``work_device`` (e.g. the GPU) does the arithmetic; the results go back
    where the weight was.
    """
    w = linear.weight.detach()
    home = w.device
    wk = w.to(work_device) if work_device is not None else w
    q, scale = quantize_weight(wk)
    err = dequantize_weight(q, scale) - wk.float()
    rel = (err.norm() / wk.float().norm().clamp_min(1e-30)).item()
    max_abs = err.abs().max().item() if err.numel() else 0.0
    linear.compute_dtype = compute_dtype or w.dtype
    linear.weight = nn.Parameter(q.to(home), requires_grad=False)
    linear.register_buffer("weight_scale", scale.to(home))
    linear.__class__ = FP8Linear
    return rel, max_abs


@dataclass(frozen=True)
class LayerError:
    """How far one layer's fp8 storage is from its bf16 weights (relative errors are Frobenius norms)."""

    name: str
    shape: tuple[int, int]
    weight_rel: float
    weight_max_abs: float
    output_rel: float = math.nan  # on a random input, fp8 layer vs bf16 layer, both computed in bf16

    def row(self) -> str:
        return (f"{self.name:<40} {self.shape[0]:>6}x{self.shape[1]:<6} {self.weight_rel:>10.2e} "
                f"{self.weight_max_abs:>10.2e} {self.output_rel:>10.2e}")


def quantize_fp8_(module: nn.Module, *, compute_dtype: torch.dtype | None = None,
                  work_device: torch.device | None = None,
                  include: Callable[[str, nn.Linear], bool] | None = None) -> list[LayerError]:
    """Convert every ``nn.Linear`` of ``module`` (already-fp8 ones skipped) in place; the weight errors."""
    rows = []
    for name, mod in module.named_modules():
        if type(mod) is nn.Linear and (include is None or include(name, mod)):
            shape = tuple(mod.weight.shape)
            rel, max_abs = quantize_linear_(mod, compute_dtype, work_device)
            rows.append(LayerError(name, shape, rel, max_abs))
    return rows


def fp8_error_table(module: nn.Module, *, tokens: int = 64, seed: int = 0,
                    reference_dtype: torch.dtype = torch.bfloat16) -> list[LayerError]:
    """Per ``nn.Linear`` of ``module`` (left unchanged): weight and output error of fp8 storage vs bf16.

    The output error runs the same random input (``tokens`` rows, seeded)
    through the layer with bf16 weights and with fp8 weights, both computed
    in ``reference_dtype``, and reports ``|y_fp8 - y_bf16| / |y_bf16|``.
    """
    gen = torch.Generator("cpu").manual_seed(seed)
    rows = []
    for name, mod in module.named_modules():
        if type(mod) is not nn.Linear:
            continue
        w = mod.weight.detach().to(reference_dtype)
        q, scale = quantize_weight(w)
        err = dequantize_weight(q, scale) - w.float()
        x = torch.randn(tokens, w.shape[1], generator=gen).to(device=w.device, dtype=reference_dtype)
        y_ref = F.linear(x, w).float()
        y = (F.linear(x, q.to(reference_dtype)) * scale.to(reference_dtype)).float()
        rows.append(LayerError(
            name, tuple(w.shape),
            (err.norm() / w.float().norm().clamp_min(1e-30)).item(),
            err.abs().max().item() if err.numel() else 0.0,
            ((y - y_ref).norm() / y_ref.norm().clamp_min(1e-30)).item(),
        ))
    return rows


def format_table(rows: list[LayerError]) -> str:
    """The table as text: one line per layer, then the worst of each column."""
    head = f"{'layer':<40} {'shape':>13} {'weight_rel':>10} {'weight_max':>10} {'output_rel':>10}"
    lines = [head] + [r.row() for r in rows]
    if rows:
        worst = LayerError("(max)", (0, 0), max(r.weight_rel for r in rows), max(r.weight_max_abs for r in rows),
                           max((r.output_rel for r in rows), default=math.nan))
        lines.append(worst.row())
    return "\n".join(lines)

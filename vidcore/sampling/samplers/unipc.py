"""UniPC: Zhao et al. (2023), "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling".

Data-prediction multistep predictor (UniP-p) plus corrector (UniC-p) with
``B(h) = exp(h) - 1`` ("bh2", the default) or ``B(h) = h`` ("bh1"). Each
step: evaluate the model at the predicted point, use that evaluation to
correct the point (UniC), then predict the next one (UniP); the corrector
costs no extra model call. Order warms up from 1 and drops back to 1 on the
last step (``lower_order_final``).

On a flow schedule this is Wan2.2's default sampler
(``FlowUniPCMultistepScheduler``), and the scalar arithmetic is theirs: 0-dim
float32 tensors, the same operation order, the coefficient solve on the
state's device. Together with the release's own grid (registered by its plugin),
a backend gets the official latents (up to where guidance is mixed: see `vidcore.guidance`).
"""

from __future__ import annotations

import torch

from ...errors import InvalidRequestError
from ..schedules import Schedule
from ._lambdas import Ladder, ladder
from .registry import builtin_sampler, report


def _coefficients(lad: Ladder, t: int, s0: int, history: list[int], ms: list[torch.Tensor], variant: str,
                  device: torch.device):
    """Shared setup of UniP and UniC: h, the phi terms, B(h), the (R, b) system and the scaled differences."""
    h = lad.lam[t] - lad.lam[s0]
    m0 = ms[-1]
    rks, d1s = [], []
    for k, si in enumerate(history, start=1):
        rk = (lad.lam[si] - lad.lam[s0]) / h
        rks.append(rk)
        d1s.append((ms[-(k + 1)] - m0) / rk)
    rks.append(torch.ones((), dtype=h.dtype))
    rks_t = torch.stack(rks).to(device)
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    order = len(history) + 1
    R, b, factorial = [], [], 1
    for k in range(1, order + 1):
        R.append(torch.pow(rks_t, k - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, b_h, torch.stack(R), torch.stack(b).to(device), d1s


def _combine(rhos: torch.Tensor, d1s: list[torch.Tensor]) -> torch.Tensor:
    """sum_k rhos[k] * d1s[k], through the same einsum as the reference code (so the same rounding)."""
    stacked = torch.stack(d1s, dim=1)
    return torch.einsum("k,bkc...->bc..." if stacked.dim() >= 3 else "k,bk->b", rhos, stacked)


def _predict(x, lad, i, ms, order, variant):
    """UniP: from x at sigma[i] to sigma[i + 1] using the last ``order`` data predictions."""
    history = [i - k for k in range(1, order)]
    h_phi_1, b_h, R, b, d1s = _coefficients(lad, i + 1, i, history, ms, variant, x.device)
    a_t = lad.alpha[i + 1]
    x_t = lad.sigma[i + 1] / lad.sigma[i] * x - a_t * h_phi_1 * ms[-1]
    if d1s:
        if order == 2:
            rhos = torch.full((1,), 0.5, dtype=x.dtype, device=x.device)
        else:
            rhos = torch.linalg.solve(R[:-1, :-1], b[:-1]).to(x.device).to(x.dtype)
        x_t = x_t - a_t * b_h * _combine(rhos, d1s)
    return x_t.to(x.dtype)


def _correct(x_prev, x_t, model_t, lad, i, ms, order, variant):
    """UniC: redo the step from sigma[i - 1] into sigma[i] with the new evaluation ``model_t`` included."""
    history = [i - (k + 1) for k in range(1, order)]
    h_phi_1, b_h, R, b, d1s = _coefficients(lad, i, i - 1, history, ms, variant, x_t.device)
    if order == 1:
        rhos = torch.full((1,), 0.5, dtype=x_prev.dtype, device=x_t.device)
    else:
        rhos = torch.linalg.solve(R, b).to(x_t.device).to(x_prev.dtype)
    a_t = lad.alpha[i]
    base = lad.sigma[i] / lad.sigma[i - 1] * x_prev - a_t * h_phi_1 * ms[-1]
    corr = rhos[-1] * (model_t - ms[-1])
    if d1s:
        corr = _combine(rhos[:-1], d1s) + corr
    return (base - a_t * b_h * corr).to(x_prev.dtype)


@builtin_sampler("unipc")
def sample_unipc(model, x, schedule: Schedule, *, callback=None, generator=None, order: int = 2,
                 variant: str = "bh2", lower_order_final: bool = True,
                 disable_corrector: tuple[int, ...] = ()) -> torch.Tensor:
    """UniPC-p with UniC (deterministic). ``order`` is the predictor order p (1..3)."""
    if variant not in ("bh1", "bh2"):
        raise InvalidRequestError(f"unipc variant must be 'bh1' or 'bh2', not {variant!r}")
    if order not in (1, 2, 3):
        raise InvalidRequestError(f"unipc order must be 1, 2 or 3, not {order!r}")
    lad = ladder(schedule, x)
    n = len(schedule.sigmas) - 1
    ms: list[torch.Tensor] = []
    x_prev, last_order = None, 1
    for i in range(n):
        denoised = model(x, schedule.sigmas[i])
        if i > 0 and (i - 1) not in disable_corrector:
            x = _correct(x_prev, x, denoised, lad, i, ms, last_order, variant)
        ms = (ms + [denoised])[-order:]
        this_order = min(order, n - i) if lower_order_final else order
        last_order = min(this_order, i + 1)
        x_prev = x
        x = _predict(x, lad, i, ms, last_order, variant)
        report(callback, x, i, schedule.sigmas[i], schedule.sigmas[i + 1], denoised)
    return x

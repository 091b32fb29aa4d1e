"""Noise schedules: pure functions from a step count to a descending ladder of noise levels.

A `Schedule` says *where* a sampler stops, never *how* it steps. Three kinds of
forward process are covered, and each fixes what the sampler's state ``x`` and
the noise level ``sigma`` mean:

- ``"ve"``: ``x = x0 + sigma * eps`` (EDM / Karras).
- ``"vp"``: the DDPM process ``z = a * x0 + s * eps`` with ``a**2 + s**2 = 1``.
  Samplers work on the *normalised* state ``x = z / a = x0 + sigma * eps`` with
  ``sigma = s / a = sqrt((1 - alphas_cumprod) / alphas_cumprod)``, as
  k-diffusion and diffusers' Euler do; so every ve/vp sampler is written once.
  `wrap_network` multiplies by ``a = 1 / sqrt(1 + sigma**2)`` before calling a
  network trained on ``z``.
- ``"flow"``: rectified flow ``x = (1 - sigma) * x0 + sigma * eps``, sigma in [0, 1].

In all three the probability-flow ODE is ``dx/dsigma = (x - x0_hat) / sigma``,
which is why Euler and Heun need no per-kind code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InvalidRequestError

KINDS = ("ve", "vp", "flow")


@dataclass
class Schedule:
    """A finished ladder of noise levels for one run.

    ``sigmas`` has ``n + 1`` float64 values, descending, the last one the
    terminal level (usually 0). ``timesteps`` has ``n`` values: what the
    network is conditioned on at ``sigmas[i]`` (float or int64, as the
    reference implementation of the schedule has it).
    """

    sigmas: torch.Tensor
    kind: str
    timesteps: torch.Tensor
    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    to_timestep: Callable[[float], float] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidRequestError(f"schedule kind {self.kind!r} is not one of {', '.join(KINDS)}")
        self.sigmas = torch.as_tensor(self.sigmas, dtype=torch.float64).cpu()
        self._grid = self.sigmas.tolist()
        self._where = {}
        for i, v in enumerate(self._grid):
            self._where.setdefault(v, i)
        if len(self.timesteps) != len(self.sigmas) - 1:
            raise ValueError("a schedule needs one timestep per step (len(sigmas) - 1)")

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def __len__(self) -> int:
        return self.steps

    # --- where on the ladder -------------------------------------------------------------
    def index(self, sigma: float | torch.Tensor) -> int | None:
        """The grid index whose sigma equals ``sigma`` exactly, else None."""
        return self._where.get(float(sigma))

    def step_of(self, sigma: float | torch.Tensor) -> int:
        """The step a noise level belongs to: the last grid index with ``sigmas[i] >= sigma``."""
        s = float(sigma)
        i = 0
        for j, v in enumerate(self._grid[:-1]):
            if v >= s:
                i = j
        return i

    def timestep(self, sigma: float | torch.Tensor) -> torch.Tensor:
        """The network's conditioning value at ``sigma`` (0-dim, ``timesteps.dtype``).

        Exactly the grid value when ``sigma`` is one of the first ``n`` grid
        points; otherwise the schedule's own continuous map.
        """
        i = self.index(sigma)
        if i is not None and i < self.steps:
            return self.timesteps[i]
        if self.to_timestep is None:
            raise ValueError(f"schedule {self.name!r} has no timestep for off-grid sigma {float(sigma)}")
        return torch.tensor(self.to_timestep(float(sigma))).to(self.timesteps.dtype)

    # --- the process ---------------------------------------------------------------------
    def alpha_sigma(self, sigma: float | torch.Tensor) -> tuple[float, float]:
        """``(alpha, sigma_t)`` with ``x = alpha * x0 + sigma_t * eps`` for the sampler's state."""
        s = float(sigma)
        if self.kind == "flow":
            return 1.0 - s, s
        return 1.0, s

    def prior(self, noise: torch.Tensor) -> torch.Tensor:
        """Scale N(0, 1) noise into the starting sample at ``sigmas[0]``.

        ve: ``sigma_max * noise``; vp: ``sqrt(1 + sigma_max**2) * noise`` (i.e.
        the DDPM start ``z_T = noise``, normalised); flow: ``noise`` itself, as
        the official flow samplers start (their first sigma is ~1).
        """
        s0 = self._grid[0]
        if self.kind == "ve":
            return noise * s0
        if self.kind == "vp":
            return noise * math.sqrt(1.0 + s0 * s0)
        return noise.clone()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        """The forward process at ``sigma`` in the sampler's coordinates (for img2img/tests)."""
        a, s = self.alpha_sigma(sigma)
        return a * x0 + s * noise


# ------------------------------------------------------------------------------------------
# DDPM training schedules (betas -> alphas_cumprod), computed as diffusers does (float32).


def alphas_cumprod(beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """The training-time cumulative product of alphas, float32, as the common reference code has it."""
    n = num_train_timesteps
    if beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2
    elif beta_schedule in ("cosine", "squaredcos_cap_v2"):
        # Nichol & Dhariwal (2021): alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2) ** 2, betas capped at 0.999.
        def bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor([min(1 - bar((i + 1) / n) / bar(i / n), 0.999) for i in range(n)], dtype=torch.float32)
    else:
        raise InvalidRequestError(
            f"unknown beta_schedule {beta_schedule!r}; choose one of: linear, scaled_linear, cosine"
        )
    return torch.cumprod(1.0 - betas, dim=0)


def spaced_timesteps(spacing: str, num_train_timesteps: int, steps: int, steps_offset: int = 0) -> np.ndarray:
    """Integer training timesteps, descending, as DDPM/DDIM-style schedulers space them."""
    n_train = num_train_timesteps
    if spacing == "leading":
        ratio = n_train // steps
        ts = (np.arange(0, steps) * ratio).round()[::-1].copy().astype(np.int64) + steps_offset
    elif spacing == "trailing":
        ts = np.round(np.arange(n_train, 0, -n_train / steps)).astype(np.int64) - 1
    elif spacing == "linspace":
        ts = np.linspace(0, n_train - 1, steps).round()[::-1].copy().astype(np.int64)
    else:
        raise InvalidRequestError(f"unknown timestep spacing {spacing!r}; choose one of: leading, trailing, linspace")
    return ts


def _log_sigma_to_t(train_sigmas: np.ndarray) -> Callable[[float], float]:
    """Continuous timestep for any sigma: linear interpolation in log-sigma between training steps."""
    log_sigmas = np.log(train_sigmas.astype(np.float64))

    def to_t(sigma: float) -> float:
        if sigma <= 0:
            return 0.0
        return float(np.interp(math.log(sigma), log_sigmas, np.arange(len(log_sigmas))))

    return to_t


def ddpm(
    steps: int,
    *,
    beta_schedule: str = "linear",
    beta_start: float = 0.0001,
    beta_end: float = 0.02,
    num_train_timesteps: int = 1000,
    spacing: str = "leading",
    steps_offset: int = 0,
    round_timesteps: bool = True,
) -> Schedule:
    """Discrete DDPM timesteps (kind vp): sigma = sqrt((1 - a_bar) / a_bar) at each spaced timestep, then 0.

    ``round_timesteps=False`` keeps "linspace" timesteps fractional and
    interpolates sigma linearly between training steps, as diffusers'
    Euler/Heun schedulers do (DDPM/DDIM round to integers).
    """
    acp = alphas_cumprod(beta_schedule, num_train_timesteps, beta_start, beta_end)
    train_sigmas = ((1 - acp) / acp) ** 0.5
    to_t = _log_sigma_to_t(train_sigmas.numpy())
    zero = torch.zeros(1, dtype=torch.float64)
    if round_timesteps:
        ts = spaced_timesteps(spacing, num_train_timesteps, steps, steps_offset)
        sig = train_sigmas.double()[torch.from_numpy(ts)]
        return Schedule(torch.cat([sig, zero]), "vp", torch.from_numpy(ts), to_timestep=to_t)
    if spacing == "linspace":
        ts_f = np.linspace(0, num_train_timesteps - 1, steps, dtype=np.float32)[::-1].copy()
    else:
        ts_f = spaced_timesteps(spacing, num_train_timesteps, steps, steps_offset).astype(float)
    sig_f = np.interp(ts_f, np.arange(num_train_timesteps), train_sigmas.numpy())
    sigmas = torch.cat([torch.from_numpy(sig_f.astype(np.float32)).double(), zero])
    return Schedule(sigmas, "vp", torch.from_numpy(ts_f.astype(np.float32)), to_timestep=to_t)


def karras(
    steps: int,
    *,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float = 7.0,
    kind: str = "vp",
    beta_schedule: str = "scaled_linear",
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    num_train_timesteps: int = 1000,
) -> Schedule:
    """Karras et al. (2022) sigmas: ``(max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho``, then 0.

    kind "vp" places the ladder inside a DDPM training schedule (sigma_min/max
    default to its ends; timesteps are fractional training steps, log-sigma
    interpolated, as diffusers' Euler/Heun use). kind "ve" is plain EDM
    (defaults 0.002..80, timestep ``log(sigma) / 4``, EDM's c_noise).
    """
    if kind == "vp":
        acp = alphas_cumprod(beta_schedule, num_train_timesteps, beta_start, beta_end)
        train_sigmas = (((1 - acp) / acp) ** 0.5).numpy()
        lo = float(train_sigmas[0]) if sigma_min is None else sigma_min
        hi = float(train_sigmas[-1]) if sigma_max is None else sigma_max
        to_t = _log_sigma_to_t(train_sigmas)
    elif kind == "ve":
        lo = 0.002 if sigma_min is None else sigma_min
        hi = 80.0 if sigma_max is None else sigma_max

        def to_t(sigma: float) -> float:
            return 0.25 * math.log(sigma) if sigma > 0 else float("-inf")
    else:
        raise InvalidRequestError(f"karras kind must be 've' or 'vp', not {kind!r}")
    if not 0 < lo < hi:
        raise InvalidRequestError(f"karras needs 0 < sigma_min < sigma_max (got {lo}, {hi})")
    ramp = np.linspace(0, 1, steps)
    inv_max, inv_min = hi ** (1 / rho), lo ** (1 / rho)
    sig = (inv_max + ramp * (inv_min - inv_max)) ** rho
    sigmas = torch.from_numpy(np.concatenate([sig, [0.0]]))
    timesteps = torch.tensor([to_t(float(s)) for s in sig], dtype=torch.float32)
    return Schedule(sigmas, kind, timesteps, to_timestep=to_t)


def check_shift(shift: float) -> None:
    """Refuse a flow shift that is not a positive number, in one line (for every shifted flow schedule)."""
    if not shift > 0:  # also catches NaN
        raise InvalidRequestError(f"shift must be > 0 (1 is no shift; larger spends more steps at high noise), "
                                  f"not {shift}")


def shift_sigma(sigma: np.ndarray | float, shift: float):
    """The flow time shift of SD3 (Esser et al., 2024) and the video models after it.

    ``shift * s / (1 + (shift - 1) * s)``; works on floats, numpy arrays and tensors (keeping their dtype).
    """
    return shift * sigma / (1 + (shift - 1) * sigma)


def flow(steps: int, *, shift: float = 1.0, num_train_timesteps: int = 1000, grid: str = "euler") -> Schedule:
    """Shifted flow-matching grids, ending in 0.

    ``grid="linspace"``: the plain uniform grid, ``torch.linspace(1, 0, n + 1)``
    shifted in float32, float32 timesteps ``sigma * N``; it starts at exactly 1
    (pure noise). The others are diffusers':
    ``grid="euler"`` (``FlowMatchEulerDiscreteScheduler``): shifted training
    sigmas ``1 .. 1/N`` give the ends; ``n`` timesteps linspaced between them
    are divided by N and shifted *again* (diffusers' arithmetic, float32 sigmas,
    float timesteps ``sigma * N``). ``grid="dpm"`` / ``"unipc"``
    (``DPMSolverMultistepScheduler`` / ``UniPCMultistepScheduler`` with
    ``use_flow_sigmas``): ``1 - linspace(1, 1/N, n + 1)`` flipped, resp.
    ``linspace(1, 1/N, n + 1)[:-1]`` nudged below 1, shifted once, with int64
    timesteps. (A model family's own grids, e.g. Wan2.2's, are registered by its plugin.)
    """
    check_shift(shift)
    n_train = num_train_timesteps
    if grid == "linspace":
        t = torch.linspace(1, 0, steps + 1)
        sig = shift_sigma(t, shift)  # float32, as reference flow-matching code computes it
        timesteps = (sig[:-1] * n_train).to(torch.float32)
        return Schedule(sig.double(), "flow", timesteps, to_timestep=lambda s: s * n_train)
    if grid == "euler":
        t_train = torch.from_numpy(np.linspace(1, n_train, n_train, dtype=np.float32)[::-1].copy())
        train = t_train / n_train
        train = shift * train / (1 + (shift - 1) * train)
        ts = np.linspace(train[0].item() * n_train, train[-1].item() * n_train, steps)
        sig = ts / n_train
        sig32 = torch.from_numpy(shift * sig / (1 + (shift - 1) * sig)).to(torch.float32)
        timesteps = sig32 * n_train
        return _flow_schedule(sig32, timesteps, lambda s: s * n_train)
    if grid == "dpm":
        sig = 1.0 - np.linspace(1, 1 / n_train, steps + 1)
        sig = np.flip(shift * sig / (1 + (shift - 1) * sig))[:-1].copy()
    elif grid == "unipc":
        sig = np.linspace(1, 1 / n_train, steps + 1)[:-1]
        sig = shift * sig / (1 + (shift - 1) * sig)
        if abs(sig[0] - 1) < 1e-6:
            sig[0] -= 1e-6  # diffusers keeps log(alpha) finite this way
    else:
        raise InvalidRequestError(f"flow grid must be one of: euler, dpm, unipc, linspace (got {grid!r})")
    timesteps = torch.from_numpy(sig * n_train).to(torch.int64)
    return _flow_schedule(torch.from_numpy(sig.astype(np.float32)), timesteps, lambda s: float(int(s * n_train)))


def _flow_schedule(sig32: torch.Tensor, timesteps: torch.Tensor, to_t: Callable[[float], float]) -> Schedule:
    sigmas = torch.cat([sig32.double(), torch.zeros(1, dtype=torch.float64)])
    return Schedule(sigmas, "flow", timesteps, to_timestep=to_t)


#: the core's family-agnostic schedules, handed to the ``register_schedules`` hook by `vidcore.builtins`;
#: a model family's own grids (Wan2.2's, HunyuanVideo's) are registered by its plugin
BUILTIN_SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "ddpm": ddpm,
    "karras": karras,
    "flow": flow,
}

"""Sampling: schedules (`Scheduler`), parameterisations (`wrap_network`, `Experts`) and samplers (`Sampler`).

Typical use (what `vidcore.pipeline` does)::

    schedule = Scheduler("flow", shift=5.0)(steps)    # any registered schedule name
    model = Experts([(e.name, wrap_network(e.network, e.prediction, schedule), e.boundary) for e in experts])
    guided = Guidance(scale=5.0).wrap(model, cond, uncond, schedule)
    x0 = Sampler.get("unipc")(guided, schedule.prior(noise), schedule, generator=gen)
"""

from .parameterization import Experts, wrap_network
from .sampler import Sampler, register_sampler
from .samplers import BUILTIN_SAMPLERS
from .scheduler import Scheduler
from .schedules import Schedule

__all__ = ["BUILTIN_SAMPLERS", "Experts", "Sampler", "Schedule", "Scheduler", "register_sampler", "wrap_network"]

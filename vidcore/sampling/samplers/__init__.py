"""The core's samplers, one function per file, each registered by `register_sampler`.

``BUILTIN_SAMPLERS`` is what `vidcore.builtins` hands to the ``register_samplers`` hook.
"""

from . import ddim, dpmpp, euler, flow_euler, unipc  # noqa: F401  (importing registers them)
from .registry import BUILTIN_SAMPLERS, register_sampler, report

__all__ = ["BUILTIN_SAMPLERS", "register_sampler", "report"]

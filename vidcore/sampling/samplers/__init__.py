"""The core's samplers, one function per file, each marked by `builtin_sampler`.

``BUILTIN_SAMPLERS`` is what `vidcore.builtins` hands to the ``register_samplers`` hook.
"""

from . import ddim, dpmpp, euler, flow_euler, unipc  # noqa: F401  (importing fills BUILTIN_SAMPLERS)
from .registry import BUILTIN_SAMPLERS, builtin_sampler, report

__all__ = ["BUILTIN_SAMPLERS", "builtin_sampler", "report"]

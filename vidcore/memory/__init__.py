"""Memory policies: where each component's weights live, in which dtype, and when they move."""

from .base import MemoryPolicy, Resident, component_role
from .composed import ComposedPolicy, PolicySpec
from .fp8 import FP8Linear, format_table, fp8_error_table, quantize_fp8_
from .lookup import get_policy, get_spec, preset_names, register_preset

__all__ = [
    "ComposedPolicy", "FP8Linear", "MemoryPolicy", "PolicySpec", "Resident", "component_role", "fp8_error_table",
    "format_table", "get_policy", "get_spec", "preset_names", "quantize_fp8_", "register_preset",
]

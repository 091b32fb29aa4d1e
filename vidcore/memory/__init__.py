"""Memory policies: where each component's weights live, in which dtype, and when they move."""

from .base import MemoryPolicy, Resident
from .presets import get_policy, preset_names, register_preset

__all__ = ["MemoryPolicy", "Resident", "get_policy", "preset_names", "register_preset"]

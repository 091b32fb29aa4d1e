"""Building blocks shared by model plugins (no model family lives here)."""

from .blocks import BlockStack, block_stacks
from .norms import RMSNorm
from .switches import MemorySwitches

__all__ = ["BlockStack", "MemorySwitches", "RMSNorm", "block_stacks"]

"""Building blocks shared by model plugins (no model family lives here)."""

from .blocks import BlockStack, block_stacks
from .norms import RMSNorm

__all__ = ["BlockStack", "RMSNorm", "block_stacks"]

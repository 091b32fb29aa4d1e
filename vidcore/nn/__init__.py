"""Building blocks shared by model plugins (no model family lives here)."""

from .blocks import BlockStack, block_stacks

__all__ = ["BlockStack", "block_stacks"]

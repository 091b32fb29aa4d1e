"""vidcore plugin package for latte models."""

__version__ = "0.1.0"

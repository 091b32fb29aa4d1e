"""vidcore plugin package for wan22 models."""

__version__ = "0.1.0"

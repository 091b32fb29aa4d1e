"""vidcore plugin package for hunyuan models."""

__version__ = "0.1.0"

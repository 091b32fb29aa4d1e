"""A minimal vidcore plugin: a tiny backend that draws a drifting colour gradient."""

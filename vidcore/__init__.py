"""vidcore: a runtime for open video diffusion models.

Notebook use::

    import vidcore
    pipe = vidcore.load("wan2.2-t2v-a14b", "ckpts/Wan2.2-T2V-A14B", memory="low-vram")
    pipe("a cat surfing").save("cat.mp4")
"""

from __future__ import annotations

from .attention import attention  # noqa: E402
from .backend import Backend, CheckpointLayout, Conditions, Defaults, Expert, Frames, Inputs, Sizes  # noqa: E402
from .errors import Cancelled, VidcoreError  # noqa: E402
from .guidance import Guidance  # noqa: E402
from .memory import MemoryPolicy  # noqa: E402
from .pipeline import Pipeline, load  # noqa: E402
from .sampling import Sampler, Scheduler  # noqa: E402
from .version import __version__
from .video import Video  # noqa: E402

__all__ = [
    "Backend", "Cancelled", "CheckpointLayout", "Conditions", "Defaults", "Expert", "Frames", "Guidance",
    "Inputs", "MemoryPolicy", "Pipeline", "Sampler", "Scheduler", "Sizes", "VidcoreError", "Video",
    "__version__", "attention", "load",
]

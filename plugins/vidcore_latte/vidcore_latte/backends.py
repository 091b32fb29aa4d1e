"""The latte backends: the embedded demo (`latte-shapes`) and any trained Latte file (`latte`)."""

from vidcore.backend import Defaults, Frames, Sizes

from .backend import WEIGHTS_DIR, LatteBackend

# The demo: trained by `vidcore train --config latte-shapes` (docs/latte.md has the exact run).
DEMO = LatteBackend(
    "latte-shapes",
    "embedded demo: coloured shapes moving left/right/up/down, 64x64, 16 frames, trained on CPU (no download)",
    Defaults(size=(64, 64), frames=16, fps=8, steps=20, sampler="flow_euler", schedule="flow", guidance=2.0,
             schedule_options={"shift": 6.0}),  # the model was trained with times shifted hard towards noise
    weights=WEIGHTS_DIR / "latte-shapes.safetensors",
    frames=Frames(step=1, offset=0, min=2, max=16),
)

# Any model trained with this plugin: `vidcore generate --backend latte --ckpt DIR "prompt"`.
GENERIC = LatteBackend(
    "latte",
    "a Latte-style model trained with `vidcore train` (--ckpt DIR holding model.safetensors)",
    Defaults(size=(64, 64), frames=16, fps=8, steps=30, sampler="flow_euler", schedule="flow", guidance=4.0,
             schedule_options={"shift": 2.0}),
    sizes=Sizes(multiple=8, min_side=16, max_side=512),
    frames=Frames(step=1, offset=0, min=2, max=64),
)

BACKENDS: list = [DEMO, GENERIC]

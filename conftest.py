"""Test-session setup shared by the core and the plugins' test folders (loaded before any of them).

``@triton.jit`` decides when its module is imported whether to build GPU kernels or interpreted
ones. Without a GPU, Triton can only run interpreted, and anything that imports triton early (e.g.
torch.compile's inductor) must already see ``TRITON_INTERPRET=1``, or kernel tests later in the
same process meet compiled-mode helpers.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

_ENV_KEYS = ("VIDCORE_KERNELS", "VIDCORE_ATTENTION", "VIDCORE_LOAD_PLUGINS", "TRITON_INTERPRET")


@pytest.fixture(autouse=True)
def _restore_vidcore_env():
    """Put vidcore's switches back after every test (set up first, so torn down after monkeypatch)."""
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v

"""Regional torch.compile of a BlockStack's blocks: compiled equals eager (CPU, one tiny block type)."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from vidcore.compile import compile_blocks, is_compiled, uncompile_blocks
from vidcore.nn import BlockStack


class Block(nn.Module):
    def __init__(self, dim: int = 8):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x, *, scale):
        h = nn.functional.layer_norm(x, x.shape[-1:]) * (1 + scale)
        return x + self.fc2(nn.functional.gelu(self.fc1(h)))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = BlockStack([Block(), Block()])

    def forward(self, x, scale):
        return self.blocks(x, scale=scale)


def _compiler_missing() -> str | None:
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler on PATH, which torch inductor needs on CPU"
    return None


def test_uncompiled_by_default_and_roundtrip():
    torch.manual_seed(0)
    m = Tiny()
    keys = list(m.state_dict())
    assert not is_compiled(m)
    assert compile_blocks(m, backend="eager") == 2 and is_compiled(m)
    assert list(m.state_dict()) == keys  # checkpoint names unchanged
    assert uncompile_blocks(m) == 2 and not is_compiled(m)
    assert "forward" not in m.blocks[0].__dict__


@pytest.mark.slow  # a cold inductor compile of one small graph: ~20-50 s on a busy 2-core CPU
@pytest.mark.skipif(_compiler_missing() is not None, reason=str(_compiler_missing()))
def test_compiled_equals_eager():
    torch.manual_seed(0)
    m = Tiny()
    x, scale = torch.randn(2, 5, 8), torch.randn(2, 1, 8)
    calls = []
    m.blocks[0].register_forward_pre_hook(lambda mod, args, kw: calls.append(1), with_kwargs=True)
    with torch.no_grad():
        eager = m(x, scale)
        compile_blocks(m)
        compiled = m(x, scale)
        again = m(x + 1, scale)
        uncompile_blocks(m)
        eager_again = m(x + 1, scale)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, eager_again, rtol=1e-5, atol=1e-5)
    assert len(calls) == 4  # module hooks (memory policies) still run around the compiled forward

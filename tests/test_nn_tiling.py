"""Spatial tiling: exact for pointwise maps, close for local maps, blend weights as specified."""

import pytest
import torch
import torch.nn.functional as F

from vidcore.nn.tiling import TileSpec, blend_cols, blend_rows, tiled_map


def _up2(t: torch.Tensor) -> torch.Tensor:
    return F.interpolate(t * 2.0 + 1.0, scale_factor=2, mode="nearest")


@pytest.mark.parametrize("shape", [(1, 2, 3, 20, 17), (2, 1, 1, 8, 8), (1, 1, 2, 5, 30)])
def test_pointwise_map_is_exact(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64).flatten(0, 1)
    spec = TileSpec(tile=(8, 8), stride=(6, 6), scale=2)
    torch.testing.assert_close(tiled_map(_up2, x, spec), _up2(x), rtol=1e-12, atol=1e-12)


def test_downscaling_map_is_exact():
    x = torch.randn(1, 3, 32, 40, dtype=torch.float64)
    fn = lambda t: F.avg_pool2d(t, 4)  # noqa: E731
    spec = TileSpec(tile=(16, 16), stride=(12, 12), scale=0.25)
    torch.testing.assert_close(tiled_map(fn, x, spec), fn(x))


def test_local_map_is_close_and_seams_differ_only_near_overlaps():
    torch.manual_seed(0)
    w = torch.randn(1, 1, 3, 3, dtype=torch.float64) / 3
    fn = lambda t: F.conv2d(t, w, padding=1)  # noqa: E731
    x = torch.randn(1, 1, 40, 40, dtype=torch.float64)
    spec = TileSpec(tile=(16, 16), stride=(12, 12))
    out, ref = tiled_map(fn, x, spec), fn(x)
    assert out.shape == ref.shape
    diff = (out - ref).abs()
    # interior of the first tile (away from its border) is exact
    torch.testing.assert_close(out[..., :11, :11], ref[..., :11, :11])
    assert diff.max() < ref.abs().max()
    assert diff.max() > 0  # it really tiled


def test_blend_weights_linear():
    a = torch.zeros(1, 4, 6)
    b = torch.ones(1, 4, 6)
    blend_rows(a, b, 4)
    torch.testing.assert_close(b[0, :, 0], torch.tensor([0.0, 0.25, 0.5, 0.75]))
    c = torch.full((1, 3, 4), 2.0)
    d = torch.zeros(1, 3, 4)
    blend_cols(c, d, 2)
    torch.testing.assert_close(d[0, 0], torch.tensor([2.0, 1.0, 0.0, 0.0]))


def test_spec_validation_and_needed():
    with pytest.raises(ValueError):
        TileSpec(tile=(8, 8), stride=(10, 4))
    spec = TileSpec(tile=(32, 32), stride=(24, 24), scale=8)
    assert spec.needed(33, 10) and not spec.needed(32, 32)

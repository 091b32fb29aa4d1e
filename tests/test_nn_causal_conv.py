"""CausalConv3d: causality, chunked == whole for any split, stride/dilation/padding modes."""

import pytest
import torch

from vidcore.nn.causal_conv import CausalCache, CausalConv3d, chunk_sizes, run_chunked


def _conv(**kw) -> CausalConv3d:
    torch.manual_seed(0)
    return CausalConv3d(3, 5, **kw).double()


@pytest.mark.parametrize("kw", [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=(3, 1, 1), padding=(1, 0, 0)),
    dict(kernel_size=3, padding=1, pad_mode="replicate"),
    dict(kernel_size=(3, 3, 3), stride=(2, 1, 1), padding=(0, 1, 1)),
    dict(kernel_size=(3, 1, 1), dilation=(2, 1, 1), time_pad=4),
    dict(kernel_size=1),
])
@pytest.mark.parametrize("sizes", [[1, 4, 4], [1, 1, 1, 1, 1, 1, 1, 1, 1], [2, 7], [9]])
def test_chunked_equals_whole(kw, sizes):
    conv = _conv(**kw)
    x = torch.randn(2, 3, 9, 6, 5, dtype=torch.float64)
    whole = conv(x)
    chunked = run_chunked(conv, x, sizes)
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)


def test_whole_matches_explicit_padding():
    """Whole-clip forward == zero-pad 2*p frames in front, p on each spatial side, then plain conv3d."""
    conv = _conv(kernel_size=3, padding=1)
    x = torch.randn(1, 3, 5, 4, 4, dtype=torch.float64)
    ref = torch.nn.functional.conv3d(torch.nn.functional.pad(x, (1, 1, 1, 1, 2, 0)), conv.weight, conv.bias)
    torch.testing.assert_close(conv(x), ref)
    assert conv(x).shape[2] == 5


def test_causal_future_does_not_leak():
    conv = _conv(kernel_size=3, padding=1)
    x = torch.randn(1, 3, 6, 4, 4, dtype=torch.float64)
    y = x.clone()
    y[:, :, 4:] += 1.0
    torch.testing.assert_close(conv(x)[:, :, :4], conv(y)[:, :, :4])
    assert not torch.allclose(conv(x)[:, :, 4:], conv(y)[:, :, 4:])


def test_replicate_pads_with_first_frame():
    conv = _conv(kernel_size=(3, 1, 1), pad_mode="replicate", time_pad=2)
    x = torch.randn(1, 3, 1, 2, 2, dtype=torch.float64)
    ref = torch.nn.functional.conv3d(x.expand(-1, -1, 3, -1, -1), conv.weight, conv.bias)
    torch.testing.assert_close(conv(x), ref)


def test_strided_chunk_can_yield_no_frames_then_catch_up():
    conv = _conv(kernel_size=(3, 1, 1), stride=(2, 1, 1))
    x = torch.randn(1, 3, 5, 2, 2, dtype=torch.float64)
    cache = CausalCache()
    first = conv(x[:, :, :1], cache)
    assert first.shape == (1, 5, 0, 2, 2)
    rest = conv(x[:, :, 1:], cache)
    torch.testing.assert_close(rest, conv(x))


def test_chunk_sizes():
    assert chunk_sizes(9) == [1, 4, 4]
    assert chunk_sizes(1) == [1]
    assert chunk_sizes(7, first=1, size=4) == [1, 4, 2]
    assert chunk_sizes(0) == []
    with pytest.raises(ValueError):
        run_chunked(lambda c, cache: c, torch.zeros(1, 1, 5), [1, 2])


def test_state_dict_names_are_conv3d():
    conv = CausalConv3d(2, 4, 3, padding=1)
    assert set(conv.state_dict()) == {"weight", "bias"}
    assert conv.weight.shape == (4, 2, 3, 3, 3)

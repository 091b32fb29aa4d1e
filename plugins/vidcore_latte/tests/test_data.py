"""The procedural dataset, the analytic detector and the tokenizer."""

from __future__ import annotations

import torch
from vidcore_latte.data.shapes import COLOURS, ShapesDataset, clip_for, grid_clips, render, to_uint8
from vidcore_latte.detector import detect, score
from vidcore_latte.text import UNK, TextConfig, TextEncoder, Tokenizer


def test_dataset_is_deterministic_by_seed_and_index():
    a, b = ShapesDataset(seed=3)[5], ShapesDataset(seed=3)[5]
    assert a["caption"] == b["caption"]
    assert torch.equal(a["video"], b["video"])
    assert not torch.equal(ShapesDataset(seed=3)[6]["video"], a["video"])
    assert not torch.equal(ShapesDataset(seed=4)[5]["video"], a["video"])


def test_clips_stay_in_frame_and_move_as_captioned():
    for i in range(40):
        clip = clip_for(0, i)
        video = render(clip)
        assert video.shape == (16, 64, 64, 3)
        assert video.amax() <= 1 and video.amin() >= 0
        # the shape's full area is visible in the first and last frames
        assert abs(float(video[0].amax(-1).sum() - video[-1].amax(-1).sum())) < 2.0
        assert clip.caption.split()[1:] == [clip.colour, clip.shape, "moving", clip.direction]


def test_shape_radius_range_is_a_setting_of_the_stream():
    from vidcore_latte.data.source import ShapesSource

    small = ShapesSource(radius=(0.11, 0.13)).item(3)["video"][0].amax(-1).sum()
    large = ShapesSource(radius=(0.19, 0.19)).item(3)["video"][0].amax(-1).sum()
    assert float(large) > 2 * float(small)  # area grows with the radius squared
    for i in range(20):  # the largest allowed shapes still stay whole in frame while they move
        video = render(clip_for(0, i, radius=(0.25, 0.25)))
        assert abs(float(video[0].amax(-1).sum() - video[-1].amax(-1).sum())) < 2.0


def test_detector_reads_ground_truth_clips():
    clips = grid_clips(2)
    assert len(clips) == 96
    result = score([to_uint8(render(c)) for c in clips], clips)
    assert result == {"colour": 1.0, "shape": 1.0, "direction": 1.0, "all": 1.0}


def test_detector_is_not_fooled_by_wrong_clips():
    clip = clip_for(0, 1)
    video = render(clip)
    reversed_clip = video.flip(0)  # moves the other way
    det = detect(reversed_clip)
    assert det.direction != clip.direction
    swapped = video[..., [2, 0, 1]]  # another colour
    assert detect(swapped).colour != clip.colour
    assert detect(torch.zeros(16, 64, 64, 3)).colour is None


def test_colour_palette_is_what_the_detector_knows():
    assert set(COLOURS) == {"red", "green", "blue", "yellow"}


def test_tokenizer_maps_unknown_words_to_unk_and_pads():
    tok = Tokenizer(length=6)
    ids = tok(["A red Zebra moving right!", ""])
    assert ids.shape == (2, 6)
    assert ids[0, 2].item() == UNK
    assert ids[1].eq(0).all()


def test_text_encoder_gives_the_null_vector_for_the_empty_prompt():
    torch.manual_seed(0)
    enc = TextEncoder(TextConfig(dim=16, heads=2))
    with torch.no_grad():
        enc.null.fill_(0.5)
        out = enc.encode(["", "a red circle moving right", "a blue circle moving right"])
    assert torch.allclose(out[0], torch.full((16,), 0.5))
    assert not torch.allclose(out[1], out[2])

"""Folders of mp4 files and of frames, a YAML split file, bad files reported by path and skipped."""

from __future__ import annotations

import logging

import numpy as np
import torch
import yaml
from PIL import Image
from vidcore_latte.data.folders import FolderSource
from vidcore_latte.data.shapes import clip_for, render, to_uint8
from vidcore_latte.train.trainer import Trainer

from vidcore.video import write_video


def _dataset(tmp_path):
    root = tmp_path / "data"
    (root / "clips").mkdir(parents=True)
    for i in range(2):
        write_video(root / "clips" / f"c{i}.mp4", to_uint8(render(clip_for(0, i), 10, 32)), 8)
    (root / "clips" / "c1.txt").write_text("a caption from a side file")
    frames = root / "frames" / "f0"
    frames.mkdir(parents=True)
    for t, frame in enumerate(to_uint8(render(clip_for(0, 5), 9, 48))):
        Image.fromarray(frame.numpy()).save(frames / f"{t:04d}.png")
    (root / "clips" / "broken.mp4").write_bytes(b"not a video at all")
    write_video(root / "clips" / "short.mp4", to_uint8(render(clip_for(0, 7), 3, 32)), 8)
    split = {
        "root": "data", "clip_length": 8, "stride": 1, "resolution": 32,
        "train": [{"path": "clips/c0.mp4", "caption": "a red thing"}, "clips/c1.mp4",
                  {"path": "frames/f0", "caption": "frames"}, "clips/broken.mp4", "clips/short.mp4",
                  "clips/missing.mp4"],
        "val": [{"path": "clips/c0.mp4", "caption": "val"}],
    }
    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump(split))
    return path


def test_split_file_skips_bad_files_by_path(tmp_path, caplog):
    split = _dataset(tmp_path)
    with caplog.at_level(logging.WARNING):
        source = FolderSource.from_split(split, "train", seed=1)
    assert len(source) == 3
    bad = {p.name for p, _ in source.bad}
    assert bad == {"broken.mp4", "short.mp4", "missing.mp4"}
    for name in bad:
        assert name in caplog.text
    captions = {source.item(i)["caption"] for i in range(6)}
    assert captions == {"a red thing", "a caption from a side file", "frames"}
    item = source.item(4)
    assert item["video"].shape == (8, 32, 32, 3)
    assert torch.equal(item["video"], FolderSource.from_split(split, "train", seed=1).item(4)["video"])
    assert len(FolderSource.from_split(split, "val")) == 1


def test_epochs_visit_every_clip_in_a_seeded_order(tmp_path):
    source = FolderSource.from_split(_dataset(tmp_path), "train", seed=3)
    for epoch in range(2):
        seen = [source.item(epoch * 3 + i)["caption"] for i in range(3)]
        assert sorted(seen) == sorted({"a red thing", "a caption from a side file", "frames"})


def test_training_runs_on_a_split_file(tmp_path):
    from conftest import tiny_train

    cfg = tiny_train(tmp_path, data=str(_dataset(tmp_path)), steps=1, predict_prob=0.0)
    losses = Trainer(cfg, resume=False).run()
    assert np.isfinite(losses).all()

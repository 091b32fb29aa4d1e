"""The README's notebook section runs as written, on the embedded demo backend."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"


def test_the_notebook_section_runs(tmp_path, monkeypatch):
    pytest.importorskip("vidcore_latte")
    from vidcore import plugins

    text = README.read_text()
    section = text[text.index("## In a notebook"):text.index("## On the command line")]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    plugins.reset()
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    video, clips, same = scope["video"], scope["clips"], scope["same"]
    assert repr(video).startswith("Video(")
    assert (tmp_path / "circle.mp4").is_file() and (tmp_path / "circle.json").is_file()
    assert len(clips) == 2 and same.frames.shape == video.frames.shape

"""Fingerprints of a checkpoint folder for run records: per file, its size and a cheap sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .files import INDEX_SUFFIX, component_files
from .formats import SAFETENSORS_SUFFIXES
from .layout import CheckpointLayout
from .safetensors_header import SafetensorsFile

_MIB = 1024 * 1024


def _digest(path: Path) -> tuple[str, str]:
    """``(sha256, what was hashed)``: enough to tell files apart without reading 100 GB."""
    h = hashlib.sha256()
    if path.name.endswith(SAFETENSORS_SUFFIXES):
        h.update(SafetensorsFile(path).header_bytes)
        return h.hexdigest(), "header"
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= 2 * _MIB:
            h.update(f.read())
            return h.hexdigest(), "full"
        h.update(f.read(_MIB))
        f.seek(size - _MIB)
        h.update(f.read(_MIB))
    return h.hexdigest(), "first+last MiB"


def fingerprint(layout: CheckpointLayout | None, ckpt_dir: Path, *, name: str) -> dict[str, dict[str, Any]]:
    """Per weight file (and shard index / extra file): size and a cheap sha256, for run records.

    Keys are paths relative to ``ckpt_dir``; safetensors hash their header
    (names, shapes, offsets), indexes and small files are hashed whole, large
    pickles by their first and last MiB. ``name`` (the backend's) is for the message
    when files are missing.
    """
    ckpt_dir = Path(ckpt_dir)
    if layout is None:
        return {}
    paths: list[Path] = []
    for component, patterns in layout.files.items():
        paths += component_files(layout, ckpt_dir, component, name=name)
        paths += [p for pat in patterns for p in sorted(ckpt_dir.glob(pat)) if p.name.endswith(INDEX_SUFFIX)]
    paths += [p for pat in layout.extra for p in sorted(ckpt_dir.glob(pat)) if p.is_file()]
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(dict.fromkeys(paths)):
        digest, what = _digest(p)
        out[p.relative_to(ckpt_dir).as_posix()] = {"size": p.stat().st_size, "sha256": digest, "hashed": what}
    return out

"""Atomic writes: a file appears whole under its final name, or not at all.

Outputs are written to a temporary file in the destination folder and moved
into place only when complete. Without ``overwrite`` the final step is a hard
link, which fails if the name was taken meanwhile, so an existing file is never
replaced silently, even by a concurrent run.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InvalidRequestError


def check_output_path(path: str | Path, *, suffix: str | None = None, overwrite: bool = False) -> Path:
    """Validate an output path before any heavy work."""
    p = Path(path)
    if suffix and p.suffix.lower() != suffix:
        raise InvalidRequestError(f"output {str(p)!r} must end in {suffix}; e.g. --out video{suffix}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InvalidRequestError(f"output folder {str(parent)!r} does not exist; create it first")
    if p.exists() and not overwrite:
        raise InvalidRequestError(f"{str(p)!r} already exists; pass --overwrite to replace it or choose another --out")
    return p


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place if the block succeeds."""
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise InvalidRequestError(f"{str(dest)!r} already exists; pass --overwrite to replace it")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part" + dest.suffix, dir=dest.parent or ".")
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; an output follows the umask
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, dest)
        else:
            try:
                os.link(tmp, dest)
            except FileExistsError:
                raise InvalidRequestError(
                    f"{str(dest)!r} appeared while writing; pass --overwrite to replace it"
                ) from None
            tmp.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json_atomic(path: str | Path, data: Any, *, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)

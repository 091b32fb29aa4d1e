"""Finding a component's weight files in a checkpoint folder: glob patterns and sharded indexes.

A layout pattern's matches are unioned; a ``*.safetensors.index.json`` stands
for the shards it names, each checked to be a file inside the checkpoint
folder before any shard is opened.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from ..errors import CheckpointError
from .info import quote
from .layout import CheckpointLayout

INDEX_SUFFIX = ".safetensors.index.json"


def fetch_hint(name: str, ckpt_dir: Path) -> str:
    """What to run when files of backend ``name`` are missing from ``ckpt_dir``."""
    return f"fetch them with `vidcore download {name} --dir {ckpt_dir}` or check with " \
           f"`vidcore verify {name} {ckpt_dir}`"


def _has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _bad_index(index: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{index}: unusable shard index ({why}); download it again")


def _index_shards(index: Path, root: Path) -> list[Path]:
    """The shard files a ``*.safetensors.index.json`` names, next to it, in order.

    Every entry of ``weight_map`` must be a relative path that stays inside the
    checkpoint folder ``root``: no absolute path, no ``..`` that climbs out of
    it, and no folder on the way that is a symlink pointing out of it. All
    entries are checked before any shard is opened. The shard file itself may
    be a symlink (the Hugging Face cache makes every file one, into its
    ``blobs/`` folder, and people link big files in from other disks).
    """
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckpointError(f"{index}: cannot read ({e.strerror or e})") from None
    except RecursionError:
        raise _bad_index(index, "not JSON: nested too deep") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad_index(index, f"not JSON: {str(e)[:100]}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict):
        raise _bad_index(index, "no weight_map object")
    bad = next(((k, v) for k, v in weight_map.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise _bad_index(index, f"weight_map entry {quote(bad[0])} is {json.dumps(bad[1])[:60]}, not a file name")
    base = Path(os.path.abspath(root))
    real_base = base.resolve()
    folder = Path(os.path.abspath(index.parent))
    shards = []
    for entry in dict.fromkeys(weight_map.values()):
        outside = f"entry {quote(entry)} is not a file inside the checkpoint folder {root}"
        if not entry or "\0" in entry or PurePosixPath(entry).is_absolute():
            raise _bad_index(index, outside)
        path = Path(os.path.normpath(folder / entry))  # "a/../b" -> "b", without following symlinks
        if not path.is_relative_to(base) or folder.is_relative_to(path):  # out of it, or a folder of it
            raise _bad_index(index, outside)
        if not path.parent.resolve().is_relative_to(real_base):
            raise _bad_index(index, f"entry {quote(entry)} leads through a symlink out of the checkpoint folder {root}")
        shards.append(Path(root) / path.relative_to(base))
    return shards


def find_component_files(layout: CheckpointLayout, ckpt_dir: Path, component: str) -> tuple[list[Path], list[str]]:
    """``(files found, names missing)`` for one component, without raising.

    A pattern's matches are unioned; a ``*.safetensors.index.json`` match is
    replaced by the shards it names (a missing shard is reported), and other
    weight files in that index's folder are ignored. A literal
    file name that is absent is missing; a glob that matches nothing is only a
    problem when the component ends up with no files at all.
    """
    patterns = tuple(layout.files.get(component, ()))
    found: list[Path] = []
    missing: list[str] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        if p not in seen:
            seen.add(p)
            found.append(p)

    matches: list[Path] = []
    for pattern in patterns:
        hits = sorted(p for p in ckpt_dir.glob(pattern) if p.is_file())
        if not hits and not _has_magic(pattern):
            missing.append(pattern)
        matches += hits
    indexes = list(dict.fromkeys(m for m in matches if m.name.endswith(INDEX_SUFFIX)))
    sharded_dirs = {i.parent for i in indexes}
    for index in indexes:
        for shard in _index_shards(index, ckpt_dir):
            if shard.is_file():
                add(shard)
            else:
                missing.append(shard.relative_to(ckpt_dir).as_posix())
    for m in matches:
        # beside an index only its shards count (a stray or other-precision file there is not ours)
        if not m.name.endswith(".json") and m.parent not in sharded_dirs:
            add(m)
    if patterns and not found and not missing:
        missing.extend(patterns)
    return found, list(dict.fromkeys(missing))


def component_files(layout: CheckpointLayout, ckpt_dir: Path, component: str, *, name: str) -> list[Path]:
    """The weight files of ``component`` in ``ckpt_dir`` (shard indexes resolved to their shards).

    A component the layout lists no files for has no weights of its own and
    gets ``[]``. Anything missing raises `CheckpointError` naming it, and what
    to run (``name`` is the backend's, for the `vidcore download` command).
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"checkpoint folder {ckpt_dir} does not exist; fetch it with "
                              f"`vidcore download {name} --dir {ckpt_dir}`")
    found, missing = find_component_files(layout, ckpt_dir, component)
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise CheckpointError(f"checkpoint folder {ckpt_dir} lacks {component} file(s) {shown}; "
                              + fetch_hint(name, ckpt_dir))
    return found

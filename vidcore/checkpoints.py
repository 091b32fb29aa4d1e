"""Checkpoint files: finding them, reading their metadata, and the one loading recipe.

Every component of every backend loads the same way (`load_component`): the
module is built on ``meta`` (no memory), the checkpoint's tensor names and
shapes are read from safetensors headers or ``.pth`` metadata, renamed with
``backend.key_map``, checked strictly against the module, and only then read,
one tensor at a time, converted to the target dtype and placed on the target
device. No full-precision copy of the model ever exists in RAM.

Untrusted files are never unpickled: ``.pth``/``.pt``/``.bin`` go through
``torch.load(weights_only=True)``, which refuses pickles that need code.

``.pth`` files are memory-mapped (``mmap=True``): a tensor that needs no
conversion on CPU stays backed by the file (copy-on-write), as torch does.

Safetensors data is read with plain positioned reads into freshly allocated
tensors rather than through a memory map: pages of a memory-mapped file count
towards the process's resident set while they are touched, which would double
the peak RSS of a load (see ``bench/bench_load_memory.py``).

Plugin authors, two hooks:

- ``Backend.key_map(component, names)`` returns ``{checkpoint name: module
  name}``; a name left out (or mapped to ``None``) is skipped on purpose (e.g.
  a decoder half the runtime never uses). `rename_keys` builds such maps from
  regex rules, and strips wrapper prefixes such as ``module.`` (nested dicts in
  ``.pth`` files are flattened with dots first, so ``{"module": {...}}`` shows
  up as ``module.*``).
- Buffers that are not saved (``persistent=False``, e.g. RoPE tables) are
  still on ``meta`` after loading. Any submodule that defines
  ``init_non_persistent(self, device: torch.device) -> None`` is called once
  after its weights are in place and must re-create them on ``device``. A
  buffer left on ``meta`` afterwards is a plugin bug and raises.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from .errors import CheckpointError

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
INDEX_SUFFIX = ".safetensors.index.json"
MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses longer headers ("header too large")
MAX_HEADER_DEPTH = 127  # serde_json's recursion limit: the library refuses JSON nested deeper
_USIZE_MAX = 2**64 - 1  # the library's offsets, dimensions and sizes are 64-bit unsigned
_MIB = 1024 * 1024

#: every dtype code of the safetensors format -> bits per element
ST_BITS: dict[str, int] = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
    "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}

#: safetensors dtype codes -> torch dtypes (only those this torch build has). F4 packs two values per
#: byte, as torch's ``float4_e2m1fn_x2``: its torch shape halves the last dimension.
ST_DTYPES: dict[str, torch.dtype] = {
    code: getattr(torch, name)
    for code, name in {
        "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
        "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
        "U16": "uint16", "U32": "uint32", "U64": "uint64",
        "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
        "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz", "F4": "float4_e2m1fn_x2",
        "C64": "complex64",
    }.items()
    if hasattr(torch, name)
}


class TensorInfo(NamedTuple):
    """What a checkpoint says about one tensor before any data is read."""

    shape: tuple[int, ...]
    dtype: str  # torch name without the prefix: "bfloat16", "float32", ...


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# -- finding files ----------------------------------------------------------------------------
def _fetch_hint(backend: Backend, ckpt_dir: Path) -> str:
    return f"fetch them with `vidcore download {backend.name} --dir {ckpt_dir}` or check with " \
           f"`vidcore verify {backend.name} {ckpt_dir}`"


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
        raise _bad_index(index, f"weight_map entry {_q(bad[0])} is {json.dumps(bad[1])[:60]}, not a file name")
    base = Path(os.path.abspath(root))
    real_base = base.resolve()
    folder = Path(os.path.abspath(index.parent))
    shards = []
    for entry in dict.fromkeys(weight_map.values()):
        outside = f"entry {_q(entry)} is not a file inside the checkpoint folder {root}"
        if not entry or "\0" in entry or PurePosixPath(entry).is_absolute():
            raise _bad_index(index, outside)
        path = Path(os.path.normpath(folder / entry))  # "a/../b" -> "b", without following symlinks
        if not path.is_relative_to(base) or folder.is_relative_to(path):  # out of it, or a folder of it
            raise _bad_index(index, outside)
        if not path.parent.resolve().is_relative_to(real_base):
            raise _bad_index(index, f"entry {_q(entry)} leads through a symlink out of the checkpoint folder {root}")
        shards.append(Path(root) / path.relative_to(base))
    return shards


def find_component_files(backend: Backend, ckpt_dir: Path, component: str) -> tuple[list[Path], list[str]]:
    """``(files found, names missing)`` for one component, without raising.

    A pattern's matches are unioned; a ``*.safetensors.index.json`` match is
    replaced by the shards it names (a missing shard is reported), and other
    weight files in that index's folder are ignored. A literal
    file name that is absent is missing; a glob that matches nothing is only a
    problem when the component ends up with no files at all.
    """
    layout = backend.layout
    patterns = tuple(layout.files.get(component, ())) if layout is not None else ()
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


def component_files(backend: Backend, ckpt_dir: Path, component: str) -> list[Path]:
    """The weight files of ``component`` in ``ckpt_dir`` (shard indexes resolved to their shards).

    A component the layout lists no files for has no weights of its own and
    gets ``[]``. Anything missing raises `CheckpointError` naming it.
    """
    ckpt_dir = Path(ckpt_dir)
    if backend.layout is None:
        raise CheckpointError(f"backend {backend.name!r} declares no checkpoint layout, so it loads no files")
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"checkpoint folder {ckpt_dir} does not exist; fetch it with "
                              f"`vidcore download {backend.name} --dir {ckpt_dir}`")
    found, missing = find_component_files(backend, ckpt_dir, component)
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise CheckpointError(f"checkpoint folder {ckpt_dir} lacks {component} file(s) {shown}; "
                              + _fetch_hint(backend, ckpt_dir))
    return found


# -- reading metadata and data ----------------------------------------------------------------
def _corrupt(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: corrupt safetensors header ({why}); the file is damaged or truncated, "
                           "download it again")


class _Refused(Exception):
    """Why a safetensors header is refused: one clause, made into a one-line `CheckpointError`."""


class _Object(dict):
    """A JSON object that remembers the keys it was given more than once (plain ``dict`` keeps the last)."""

    repeated: tuple[str, ...] = ()


def _json_object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        obj.repeated = tuple(k for k, _ in pairs if k in seen or seen.add(k))
    return obj


def _json_int(text: str) -> int | float:
    # as serde_json reads numbers: "-0" is a float, integers beyond 64 bits become (possibly infinite) floats
    if text == "-0":
        return -0.0
    value = int(text) if len(text) <= 21 else None
    if value is not None and -2**63 <= value <= _USIZE_MAX:
        return value
    return _json_float(text)


def _json_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"number {text[:30]} is out of range")
    return value


def _json_constant(text: str) -> Any:
    raise _Refused(f"{text} is not a JSON number")


def _check_tree(obj: Any) -> None:
    """Refuse nesting the library refuses, and strings that are not Unicode (lone surrogates)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_HEADER_DEPTH:
            raise _Refused(f"JSON nested deeper than {MAX_HEADER_DEPTH} levels")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            for text in (key, value):
                if isinstance(text, str) and not text.isascii():
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError:
                        raise _Refused("a string holds a lone surrogate escape") from None
            if isinstance(value, (dict, list)):
                stack.append((value, depth + 1))


def _q(name: str) -> str:
    """A name for a message: quoted, and cut short (a header may hold megabyte-long names)."""
    return repr(name) if len(name) <= 60 else repr(name[:60]) + "..."


def _is_usize(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _USIZE_MAX  # bool is an int subclass, and is refused


def _header_json(raw: bytes) -> _Object:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Refused(f"header is not UTF-8 at byte {e.start}") from None
    try:
        header = json.loads(text, object_pairs_hook=_json_object, parse_int=_json_int, parse_float=_json_float,
                            parse_constant=_json_constant)
    except RecursionError:
        raise _Refused(f"JSON nested deeper than {MAX_HEADER_DEPTH} levels") from None
    except ValueError as e:
        raise _Refused(f"not JSON: {e}") from None
    if not isinstance(header, dict):
        raise _Refused("not a JSON object")
    _check_tree(header)
    return header


def _parse_header(raw: bytes, data_size: int) -> tuple[dict[str, tuple[str, list[int], int, int]], dict[str, str]]:
    """``({name: (dtype code, shape, begin, end)}, metadata)`` of a header, checked as the safetensors library does.

    The library (Rust, serde_json) refuses: a header that is not UTF-8 JSON
    (``NaN``/``Infinity`` and numbers beyond a 64-bit float are not JSON;
    leading and trailing whitespace is allowed), nesting deeper than 127,
    ``__metadata__`` that is not a map of strings, a field given twice inside
    an entry, an unknown dtype, shapes and offsets that are not unsigned 64-bit
    integers (a float, ``-0``, a boolean), a shape whose element count or byte
    size overflows 64 bits, a sub-byte tensor that does not end on a byte, and
    data offsets that, sorted, do not tile the data buffer from 0 to its end
    without gap or overlap, each exactly ``prod(shape) * itemsize`` long.

    Deliberately stricter than the library, which accepts these but which no
    writer produces: a tensor name or metadata key given twice (the library
    silently keeps the last; another reader may keep the first, so the file
    would mean two things), an entry written as a JSON array instead of an
    object, and a dtype written as ``{"F32": null}`` instead of a string.
    """
    header = _header_json(raw)
    if header.repeated:
        raise _Refused(f"name {_q(header.repeated[0])} appears twice")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Refused("__metadata__ is not a map of strings to strings")
    elif metadata.repeated:
        raise _Refused(f"__metadata__ key {_q(metadata.repeated[0])} appears twice")
    entries: dict[str, tuple[str, list[int], int, int]] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise _Refused(f"entry {_q(name)} is not an object with dtype, shape and data_offsets")
        if entry.repeated:
            raise _Refused(f"entry {_q(name)} gives {_q(entry.repeated[0])} twice")
        lacking = [k for k in ("dtype", "shape", "data_offsets") if k not in entry]
        if lacking:
            raise _Refused(f"entry {_q(name)} has no {lacking[0]}")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(code, str):
            raise _Refused(f"entry {_q(name)} has a dtype that is not a string")
        if code not in ST_BITS:
            raise _Refused(f"entry {_q(name)} has unknown dtype {_q(code)}")
        if not isinstance(shape, list) or not all(_is_usize(d) for d in shape):
            raise _Refused(f"entry {_q(name)} has a shape that is not a list of non-negative integers")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_usize(o) for o in offsets):
            raise _Refused(f"entry {_q(name)} has data_offsets that are not two non-negative integers")
        entries[name] = (code, shape, offsets[0], offsets[1])
    end = 0
    for name, (code, shape, begin, stop) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if begin != end or stop < begin:
            raise _Refused(f"tensor {_q(name)} has data_offsets [{begin}, {stop}] where the data so far ends at {end} "
                           "(a gap, an overlap or a reversed range)")
        end = stop
        count = 1
        for d in shape:
            count *= d
            if count > _USIZE_MAX:
                raise _Refused(f"the size of tensor {_q(name)} overflows 64 bits")
        bits = count * ST_BITS[code]
        if bits > _USIZE_MAX:
            raise _Refused(f"the size of tensor {_q(name)} overflows 64 bits")
        if bits % 8:
            raise _Refused(f"{code} tensor {_q(name)} does not end on a byte boundary")
        if stop - begin != bits // 8:
            raise _Refused(f"tensor {_q(name)} spans {stop - begin} bytes but its shape and dtype {code} "
                           f"need {bits // 8}")
    if end != data_size:
        raise _Refused(f"the file holds {data_size} data bytes but its tensors cover {end}"
                       + (" (truncated)" if end > data_size else ""))
    return entries, dict(metadata)


def _torch_layout(path: Path, name: str, code: str, shape: list[int]) -> tuple[torch.dtype, tuple[int, ...]]:
    """The torch dtype and shape of a checked entry (as safetensors' own torch loader makes them)."""
    dtype = ST_DTYPES.get(code)
    if dtype is None:
        raise CheckpointError(f"{path}: tensor {_q(name)} has dtype {code}, which this torch {torch.__version__} "
                              "cannot hold; convert the file to another dtype or upgrade torch")
    if any(d >= 2**63 for d in shape):
        raise _Refused(f"tensor {_q(name)} has a dimension of 2**63 or more, which torch cannot hold")
    if code == "F4":  # two values per byte: torch's float4_e2m1fn_x2 halves the last dimension
        if not shape or shape[-1] % 2:
            raise _Refused(f"F4 tensor {_q(name)} needs an even last dimension")
        shape = [*shape[:-1], shape[-1] // 2]
    return dtype, tuple(shape)


class _SafetensorsFile:
    """One safetensors file: the header parsed and checked up front, tensors read on demand.

    The header is refused exactly where the safetensors library refuses it
    (see `_parse_header`, and tests/test_safetensors_header.py, which checks
    that against the library), each refusal one line built by ``corrupt``.
    """

    def __init__(self, path: Path, corrupt: Callable[[Path, str], CheckpointError] = _corrupt):
        self.path = path
        try:
            size = path.stat().st_size
            with path.open("rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise corrupt(path, f"file is only {size} bytes")
                (n,) = struct.unpack("<Q", head)
                if n > MAX_HEADER_BYTES:
                    raise corrupt(path, f"header length {n} is over the format's limit of {MAX_HEADER_BYTES}")
                if n + 8 > size:
                    raise corrupt(path, f"header length {n} does not fit a {size}-byte file")
                raw = f.read(n)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
        self.header_bytes = head + raw
        self.data_start = 8 + n
        self.entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        try:
            entries, self.metadata = _parse_header(raw, size - self.data_start)
            for name, (code, shape, begin, end) in entries.items():
                self.entries[name] = (*_torch_layout(path, name, code, shape), begin, end)
        except _Refused as e:
            raise corrupt(path, str(e)) from None

    def infos(self) -> dict[str, TensorInfo]:
        return {k: TensorInfo(shape, dtype_name(dt)) for k, (dt, shape, _, _) in self.entries.items()}

    def read(self, name: str, f: Any) -> torch.Tensor:
        """Read one tensor into new CPU memory with positioned reads (no memory map)."""
        dtype, shape, begin, end = self.entries[name]
        buf = torch.empty(end - begin, dtype=torch.uint8)
        if end > begin:
            view = memoryview(buf.numpy()).cast("B")
            f.seek(self.data_start + begin)
            got = 0
            while got < len(view):
                n = f.readinto(view[got:])
                if not n:
                    raise CheckpointError(f"{self.path}: file ends inside tensor {name!r}; download it again")
                got += n
        return buf.view(dtype).reshape(shape)


_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)", re.IGNORECASE)


def _torch_load(path: Path, map_location: str) -> Any:
    """``torch.load`` that can never run code from the file; mmap'd where the format allows."""
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            log.warning("%s uses the legacy (non-zip) torch format: it is read whole into memory", path)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        text = str(e)
        m = _GLOBAL_RE.search(text)
        if isinstance(e, pickle.UnpicklingError) and m:
            raise CheckpointError(
                f"{path} needs code to unpickle (it references {m.group(1)}) and is refused for safety; convert "
                "it to safetensors with a trusted tool, or use the official safetensors files") from None
        if isinstance(e, pickle.UnpicklingError):
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            reason = next((lines[i + 1] for i, ln in enumerate(lines[:-1]) if ln.endswith("error:")), "")
            raise CheckpointError(
                f"{path} cannot be unpickled safely ({reason or 'weights_only refused it'}): it is damaged or "
                "needs code to unpickle, and is refused for safety; download it again or use safetensors") from None
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: "
                              f"{text.splitlines()[0] if text else ''}); download it again") from None


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            yield name, v
        elif isinstance(v, Mapping):
            yield from _flatten(v, name + ".")


def _pth_tensors(path: Path, map_location: str) -> dict[str, torch.Tensor]:
    obj = _torch_load(path, map_location)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors")
    return dict(_flatten(obj))


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Names, shapes and dtypes of a weight file without reading its tensor data.

    safetensors: the JSON header only (checked against the file size);
    ``.pth``/``.pt``/``.bin``: ``torch.load(weights_only=True)`` onto the meta
    device, which reads the pickle but no storage.
    """
    path = Path(path)
    if path.name.endswith(SAFETENSORS_SUFFIXES):
        return _SafetensorsFile(path).infos()
    if path.name.endswith(PICKLE_SUFFIXES):
        return {k: TensorInfo(tuple(t.shape), dtype_name(t.dtype)) for k, t in _pth_tensors(path, "meta").items()}
    raise CheckpointError(f"{path}: unknown weight format; expected .safetensors or .pth/.pt/.bin")


class _Source:
    """All tensors of one component across its files, read lazily by checkpoint name."""

    def __init__(self, files: Iterable[Path]):
        self.where: dict[str, tuple[Path, Any]] = {}
        self.infos: dict[str, TensorInfo] = {}
        for path in files:
            if path.name.endswith(SAFETENSORS_SUFFIXES):
                st = _SafetensorsFile(path)
                items = {k: (st, i) for k, i in st.infos().items()}
            elif path.name.endswith(PICKLE_SUFFIXES):
                tensors = _pth_tensors(path, "cpu")  # mmap'd: shapes now, data paged in on use
                items = {k: (t, TensorInfo(tuple(t.shape), dtype_name(t.dtype))) for k, t in tensors.items()}
            else:
                raise CheckpointError(f"{path}: unknown weight format; expected .safetensors or .pth/.pt/.bin")
            for name, (handle, info) in items.items():
                if name in self.where:
                    raise CheckpointError(f"tensor {name!r} appears in both {self.where[name][0]} and {path}")
                self.where[name] = (path, handle)
                self.infos[name] = info
        self._open: dict[Path, Any] = {}

    def get(self, name: str) -> torch.Tensor:
        path, handle = self.where[name]
        if isinstance(handle, torch.Tensor):
            return handle
        f = self._open.get(path)
        if f is None:
            f = self._open[path] = path.open("rb", buffering=0)
        return handle.read(name, f)

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()
        self.where.clear()


def component_tensors(backend: Backend, ckpt_dir: Path, component: str) -> dict[str, TensorInfo]:
    """Checkpoint tensors of one component, by checkpoint name, from headers/metadata only."""
    infos: dict[str, TensorInfo] = {}
    for path in component_files(backend, ckpt_dir, component):
        infos.update(read_header(path))
    return infos


# -- names and comparison ---------------------------------------------------------------------
def rename_keys(names: Iterable[str], rules: Iterable[tuple[str, str]] = (),
                drop: Iterable[str] = ()) -> dict[str, str | None]:
    """A key map from regex rules, for ``Backend.key_map`` implementations.

    Each ``(pattern, replacement)`` is applied in order with ``re.sub``; names
    matching a ``drop`` regex map to ``None`` (skipped). E.g. strip a DDP
    wrapper: ``rename_keys(names, [(r"^module\\.", "")])``.
    """
    rules = [(re.compile(p), r) for p, r in rules]
    drops = [re.compile(p) for p in drop]
    out: dict[str, str | None] = {}
    for name in names:
        if any(d.search(name) for d in drops):
            out[name] = None
            continue
        new = name
        for pat, rep in rules:
            new = pat.sub(rep, new)
        out[name] = new
    return out


def map_names(backend: Backend, component: str, names: list[str]) -> dict[str, str]:
    """``{checkpoint name: module name}`` from ``backend.key_map``, without the skipped names."""
    raw = backend.key_map(component, list(names))
    known = set(names)
    mapping = {k: v for k, v in raw.items() if v is not None and k in known}
    seen: dict[str, str] = {}
    for src, dst in mapping.items():
        if dst in seen:
            raise CheckpointError(f"{backend.name} {component}: checkpoint tensors {seen[dst]!r} and {src!r} "
                                  f"both map to {dst!r}; the backend's key_map is wrong for these files")
        seen[dst] = src
    return mapping


def expected_tensors(module: nn.Module) -> dict[str, TensorInfo]:
    """Every state-dict tensor of a (meta-built) module: name -> shape, dtype."""
    return {k: TensorInfo(tuple(v.shape), dtype_name(v.dtype))
            for k, v in module.state_dict(keep_vars=True).items()}


def tied_names(module: nn.Module) -> dict[str, list[str]]:
    """State-dict names that share one tensor (tied weights): each name -> all names of its tensor."""
    groups: dict[int, list[str]] = {}
    named = list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False))
    for name, t in named:
        groups.setdefault(id(t), []).append(name)
    return {n: g for g in groups.values() if len(g) > 1 for n in g}


@dataclass
class Mismatch:
    """How a component's checkpoint differs from its module (after renaming)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mis_shaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # name, ckpt, model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mis_shaped)

    def summary(self, limit: int = 3) -> str:
        """One clause per problem kind, with the first few names."""

        def few(items: list[str]) -> str:
            return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({few(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({few(self.unexpected)})")
        if self.mis_shaped:
            shown = [f"{n}: checkpoint {list(c)} vs model {list(m)}" for n, c, m in self.mis_shaped]
            parts.append(f"{len(self.mis_shaped)} mis-shaped ({few(shown)})")
        return "; ".join(parts)


def compare(expected: Mapping[str, TensorInfo], found: Mapping[str, TensorInfo],
            tied: Mapping[str, list[str]] | None = None) -> Mismatch:
    """Compare module tensors with (renamed) checkpoint tensors; dtypes may differ (converted on load)."""
    tied = tied or {}
    result = Mismatch()
    for name, info in expected.items():
        if name in found:
            if tuple(found[name].shape) != tuple(info.shape):
                result.mis_shaped.append((name, tuple(found[name].shape), tuple(info.shape)))
        elif not any(alias in found for alias in tied.get(name, ())):
            result.missing.append(name)
    result.unexpected = [n for n in found if n not in expected]
    return result


# -- loading ----------------------------------------------------------------------------------
def _slot(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner_name, _, attr = name.rpartition(".")
    return (module.get_submodule(owner_name) if owner_name else module), attr


def _assign(module: nn.Module, names: list[str], value: torch.Tensor) -> None:
    """Put ``value`` in place of the meta tensor(s) ``names`` (several when weights are tied)."""
    owner, attr = _slot(module, names[0])
    if attr in owner._parameters:
        old = owner._parameters[attr]
        value = nn.Parameter(value, requires_grad=bool(old is not None and old.requires_grad))
    for name in names:
        owner, attr = _slot(module, name)
        table = owner._parameters if attr in owner._parameters else owner._buffers
        table[attr] = value


def _convert(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    """Convert on whichever side is cheaper: shrink before a transfer, grow after it."""
    if dtype is None or not t.is_floating_point() or t.dtype == dtype:
        return t.to(device)
    if dtype.itemsize <= t.dtype.itemsize:
        return t.to(dtype).to(device)
    return t.to(device).to(dtype)


def init_non_persistent(module: nn.Module, device: torch.device) -> None:
    """Re-create buffers that checkpoints do not hold, through each submodule's own hook."""
    for sub in module.modules():
        hook = getattr(sub, "init_non_persistent", None)
        if callable(hook):
            hook(device)
    left = [n for n, b in module.named_buffers() if b.is_meta] + [n for n, p in module.named_parameters()
                                                                    if p.is_meta]
    if left:
        raise RuntimeError(
            f"{type(module).__name__}: {len(left)} tensor(s) still on the meta device after loading "
            f"({', '.join(left[:3])}); the module must define init_non_persistent(device) to rebuild them")


def load_component(backend: Backend, component: str, module: nn.Module, ckpt_dir: Path, *,
                   device: torch.device | str, dtype: torch.dtype | None) -> None:
    """Materialise a meta-built ``module`` from its checkpoint files, straight into ``device``/``dtype``.

    Checks everything before reading any data: files present, names (after
    ``backend.key_map``) and shapes strictly equal to the module's. Then
    reads one tensor at a time, converts floating tensors to ``dtype`` (None
    keeps the stored dtype; integer and bool tensors are never converted) and
    assigns it in place of the meta tensor (tied weights stay tied).
    """
    device = torch.device(device)
    ckpt_dir = Path(ckpt_dir)
    files = component_files(backend, ckpt_dir, component)
    expected = expected_tensors(module)
    if not files and expected:
        raise CheckpointError(f"backend {backend.name!r} lists no checkpoint files for {component}, "
                              f"which has {len(expected)} tensors; the backend's layout is incomplete")
    source = _Source(files)
    try:
        mapping = map_names(backend, component, list(source.infos))
        found = {dst: source.infos[src] for src, dst in mapping.items()}
        tied = tied_names(module)
        mismatch = compare(expected, found, tied)
        if not mismatch.ok:
            raise CheckpointError(
                f"{backend.name} {component} checkpoint does not match the model: {mismatch.summary()}; "
                f"run `vidcore verify {backend.name} {ckpt_dir}` for the full list")
        log.info("loading %s %s: %d tensors from %d file(s) -> %s %s", backend.name, component, len(mapping),
                 len(files), device, dtype_name(dtype) if dtype else "stored dtype")
        for src, dst in mapping.items():
            _assign(module, tied.get(dst, [dst]), _convert(source.get(src), device, dtype))
    finally:
        source.close()
    init_non_persistent(module, device)


# -- fingerprints -----------------------------------------------------------------------------
def _digest(path: Path) -> tuple[str, str]:
    """``(sha256, what was hashed)``: enough to tell files apart without reading 100 GB."""
    h = hashlib.sha256()
    if path.name.endswith(SAFETENSORS_SUFFIXES):
        h.update(_SafetensorsFile(path).header_bytes)
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


def fingerprint(backend: Backend, ckpt_dir: Path) -> dict[str, dict[str, Any]]:
    """Per weight file (and shard index / extra file): size and a cheap sha256, for run records.

    Keys are paths relative to ``ckpt_dir``; safetensors hash their header
    (names, shapes, offsets), indexes and small files are hashed whole, large
    pickles by their first and last MiB.
    """
    ckpt_dir = Path(ckpt_dir)
    layout = backend.layout
    if layout is None:
        return {}
    paths: list[Path] = []
    for component, patterns in layout.files.items():
        paths += component_files(backend, ckpt_dir, component)
        paths += [p for pat in patterns for p in sorted(ckpt_dir.glob(pat)) if p.name.endswith(INDEX_SUFFIX)]
    paths += [p for pat in layout.extra for p in sorted(ckpt_dir.glob(pat)) if p.is_file()]
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(dict.fromkeys(paths)):
        digest, what = _digest(p)
        out[p.relative_to(ckpt_dir).as_posix()] = {"size": p.stat().st_size, "sha256": digest, "hashed": what}
    return out


def __getattr__(name: str) -> Any:
    # `verify`, `manifest` and `VerifyReport` live in vidcore.manifest; re-exported for convenience
    if name in ("verify", "manifest", "VerifyReport"):
        from . import manifest as _m

        return getattr(_m, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The safetensors format, read by our own strict parser: refused exactly where the library refuses.

A header is refused exactly where the safetensors library (Rust, serde_json)
refuses it, plus a few things no writer produces but that would make a file
mean two things (see `_parse_header`); tests/test_safetensors_header.py checks
that against the library. Each refusal is one `CheckpointError` line naming
the file. Tensor data is read with plain positioned reads into freshly
allocated tensors rather than through a memory map: pages of a memory-mapped
file count towards the process's resident set while they are touched, which
would double the peak RSS of a load (see ``bench/bench_load_memory.py``).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from .info import TensorInfo, dtype_name, quote

MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses longer headers ("header too large")
MAX_HEADER_DEPTH = 127  # serde_json's recursion limit: the library refuses JSON nested deeper
_USIZE_MAX = 2**64 - 1  # the library's offsets, dimensions and sizes are 64-bit unsigned

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
        raise _Refused(f"name {quote(header.repeated[0])} appears twice")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Refused("__metadata__ is not a map of strings to strings")
    elif metadata.repeated:
        raise _Refused(f"__metadata__ key {quote(metadata.repeated[0])} appears twice")
    entries: dict[str, tuple[str, list[int], int, int]] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise _Refused(f"entry {quote(name)} is not an object with dtype, shape and data_offsets")
        if entry.repeated:
            raise _Refused(f"entry {quote(name)} gives {quote(entry.repeated[0])} twice")
        lacking = [k for k in ("dtype", "shape", "data_offsets") if k not in entry]
        if lacking:
            raise _Refused(f"entry {quote(name)} has no {lacking[0]}")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(code, str):
            raise _Refused(f"entry {quote(name)} has a dtype that is not a string")
        if code not in ST_BITS:
            raise _Refused(f"entry {quote(name)} has unknown dtype {quote(code)}")
        if not isinstance(shape, list) or not all(_is_usize(d) for d in shape):
            raise _Refused(f"entry {quote(name)} has a shape that is not a list of non-negative integers")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_usize(o) for o in offsets):
            raise _Refused(f"entry {quote(name)} has data_offsets that are not two non-negative integers")
        entries[name] = (code, shape, offsets[0], offsets[1])
    end = 0
    for name, (code, shape, begin, stop) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if begin != end or stop < begin:
            raise _Refused(f"tensor {quote(name)} has data_offsets [{begin}, {stop}] where the data so far ends at "
                           f"{end} (a gap, an overlap or a reversed range)")
        end = stop
        count = 1
        for d in shape:
            count *= d
            if count > _USIZE_MAX:
                raise _Refused(f"the size of tensor {quote(name)} overflows 64 bits")
        bits = count * ST_BITS[code]
        if bits > _USIZE_MAX:
            raise _Refused(f"the size of tensor {quote(name)} overflows 64 bits")
        if bits % 8:
            raise _Refused(f"{code} tensor {quote(name)} does not end on a byte boundary")
        if stop - begin != bits // 8:
            raise _Refused(f"tensor {quote(name)} spans {stop - begin} bytes but its shape and dtype {code} "
                           f"need {bits // 8}")
    if end != data_size:
        raise _Refused(f"the file holds {data_size} data bytes but its tensors cover {end}"
                       + (" (truncated)" if end > data_size else ""))
    return entries, dict(metadata)


def _torch_layout(path: Path, name: str, code: str, shape: list[int]) -> tuple[torch.dtype, tuple[int, ...]]:
    """The torch dtype and shape of a checked entry (as safetensors' own torch loader makes them)."""
    dtype = ST_DTYPES.get(code)
    if dtype is None:
        raise CheckpointError(f"{path}: tensor {quote(name)} has dtype {code}, which this torch {torch.__version__} "
                              "cannot hold; convert the file to another dtype or upgrade torch")
    if any(d >= 2**63 for d in shape):
        raise _Refused(f"tensor {quote(name)} has a dimension of 2**63 or more, which torch cannot hold")
    if code == "F4":  # two values per byte: torch's float4_e2m1fn_x2 halves the last dimension
        if not shape or shape[-1] % 2:
            raise _Refused(f"F4 tensor {quote(name)} needs an even last dimension")
        shape = [*shape[:-1], shape[-1] // 2]
    return dtype, tuple(shape)


class SafetensorsFile:
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

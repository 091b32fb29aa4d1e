"""Our safetensors header checks (`vidcore.checkpoints.SafetensorsFile`) against the safetensors library.

The library is the oracle: a file "loads" there when ``safe_open(path, "pt")``
opens it and every ``get_tensor`` succeeds (dtypes torch cannot hold and
shapes torch cannot take fail only at ``get_tensor``). The property: for valid
files and for files mutated in every way we could think of (offsets, shapes,
dtypes, swapped entries, gaps, overlaps, truncation, padding, garbage bytes,
``Infinity``/``NaN``/huge/negative/boolean numbers, deep nesting, lone
surrogates), we accept exactly when the library does, and when both accept,
names, dtypes, shapes, metadata and every tensor's bytes agree. Every refusal
of ours is one line naming the file; nothing else ever escapes.

Deliberate differences (we refuse, the library accepts; see
`test_deliberate_differences_from_the_library`): a tensor name or metadata key
given twice (the library silently keeps the last one; a reader that keeps the
first would see another tensor), an entry written as a JSON array
``["F32", [2], [0, 8]]`` and a dtype written as ``{"F32": null}`` (serde quirks
no writer produces). The property therefore never generates the last two, and
for repeated keys asserts only that we refuse.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from vidcore.checkpoints import MAX_HEADER_BYTES, MAX_HEADER_DEPTH, ST_BITS, ST_DTYPES, SafetensorsFile
from vidcore.errors import CheckpointError

ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("st")


# -- the two readers --------------------------------------------------------------------------
def library(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    try:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except Exception:  # noqa: BLE001 - SafetensorError, or torch's TypeError for a shape it cannot take
        return None


def ours(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    try:
        st_file = SafetensorsFile(path)
    except CheckpointError as e:
        text = str(e)
        assert "\n" not in text and str(path) in text, text
        return None
    with path.open("rb", buffering=0) as f:
        return {k: st_file.read(k, f) for k in st_file.entries}, st_file.metadata


def _bytes(t: torch.Tensor) -> bytes:
    return bytes(t.reshape(-1).view(torch.uint8).tolist())


def agree(path: Path, *, we_refuse: bool = False) -> bool:
    """Assert both readers agree on ``path`` (or, ``we_refuse``, that we refuse); True if accepted."""
    mine = ours(path)
    if we_refuse:
        assert mine is None, path.read_bytes()[:300]
        return False
    theirs = library(path)
    assert (mine is None) == (theirs is None), (mine is None, path.read_bytes()[:300])
    if mine is None or theirs is None:
        return False
    (a, meta_a), (b, meta_b) = mine, theirs
    assert set(a) == set(b) and meta_a == meta_b
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert _bytes(a[k]) == _bytes(b[k]), k
    return True


def file_bytes(header: Any, data: bytes = b"", *, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def write(folder: Path, content: bytes, name: str = "t.safetensors") -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


# -- the property -----------------------------------------------------------------------------
class Raw:
    """A JSON token placed verbatim (json.dumps cannot write Infinity-as-given, 1e400, "\\ud800", ...)."""

    def __init__(self, text: str):
        self.text = text


RAW_TOKENS = ["Infinity", "-Infinity", "NaN", "1e400", "-1e400", "1e308", "true", "false", "null", "2.0", "-0",
              "-1", "0", "1E1", "18446744073709551615", "18446744073709551616", "9223372036854775808", "9" * 400,
              "9" * 300, "[]", "{}", '"x"', '"F32"', "[0, 8, 8]", "[0]", "[[0]]", '"\\ud800"', '"\\udc00"',
              '"\\ud83d\\ude00"', '"a\\u0000"']
NAMES = st.text(st.characters(codec="utf-8", exclude_characters="@"), max_size=6).filter(
    lambda n: n != "__metadata__")
WHITESPACE = st.text(st.sampled_from(" \t\r\n"), max_size=4)
MUTATIONS = ["offset", "dim", "dtype", "swap", "gap", "overlap", "raw", "extra", "nest", "drop_field", "metadata",
             "drop_entry", "duplicate", "surrogate_name", "truncate", "append", "length", "garbage", "pad",
             "lead", "bom"]


def _serialise(header: dict, *, ascii_only: bool, compact: bool) -> tuple[str, int]:
    """JSON text of ``header`` with each `Raw` value written verbatim."""
    raws: list[str] = []

    def mark(obj: Any) -> Any:
        if isinstance(obj, Raw):
            raws.append(obj.text)
            return f"@@RAW{len(raws) - 1}@@"
        if isinstance(obj, dict):
            return {k: mark(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [mark(v) for v in obj]
        return obj

    text = json.dumps(mark(header), ensure_ascii=ascii_only, separators=(",", ":") if compact else None)
    for i, token in enumerate(raws):
        text = text.replace(f'"@@RAW{i}@@"', token)
    return text


def _ints(entry: dict, field: str) -> list | None:
    """``entry[field]`` if it is still a list of plain integers (not yet replaced by a mutation)."""
    value = entry.get(field)
    return value if isinstance(value, list) and all(type(v) is int for v in value) else None


@st.composite
def safetensors_files(draw) -> tuple[bytes, bool]:
    """``(file bytes, whether a repeated key was injected)``: a valid file, then 0-3 mutations."""
    rnd = random.Random(draw(st.integers(0, 2**32)))
    names = draw(st.lists(NAMES, unique=True, max_size=4))
    specs = []
    for name in names:
        code = draw(st.sampled_from(sorted(ST_DTYPES)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        count = 1
        for d in shape:
            count *= d
        specs.append((name, code, shape, count * ST_BITS[code] // 8))
    order = draw(st.permutations(range(len(specs))))  # data order differs from header order
    header: dict[str, Any] = {}
    metadata = draw(st.none() | st.dictionaries(NAMES, NAMES, max_size=2))
    if metadata is not None:
        header["__metadata__"] = metadata
    data = bytearray()
    offsets = {}
    for i in order:
        name, _, _, nbytes = specs[i]
        offsets[name] = [len(data), len(data) + nbytes]
        data += rnd.randbytes(nbytes)
    for name, code, shape, _ in specs:
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": offsets[name]}
    entries = [k for k in header if k != "__metadata__"]
    duplicate = False
    byte_level = []
    for kind in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        key = draw(st.sampled_from(entries)) if entries else None
        e = header[key] if key is not None else {}
        offs, shape = _ints(e, "data_offsets"), _ints(e, "shape")
        if kind == "offset" and offs and len(offs) == 2:
            offs[draw(st.integers(0, 1))] = draw(st.integers(0, len(data) + 16))
        elif kind == "dim" and shape is not None:
            value = draw(st.sampled_from([0, 1, 2, 3, 7, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -1]))
            if shape and draw(st.booleans()):
                shape[draw(st.integers(0, len(shape) - 1))] = value
            else:
                shape.append(value)
        elif kind == "dtype" and key is not None:
            e["dtype"] = draw(st.sampled_from([*ST_BITS, "f32", "", "F33", "FLOAT", "float32"]))
        elif kind == "swap" and len(entries) > 1:
            a, b = draw(st.lists(st.sampled_from(entries), min_size=2, max_size=2, unique=True))
            if "data_offsets" in header[a] and "data_offsets" in header[b]:
                header[a]["data_offsets"], header[b]["data_offsets"] = (header[b]["data_offsets"],
                                                                        header[a]["data_offsets"])
        elif kind == "gap" and offs and len(offs) == 2:  # k unowned bytes before this tensor, the rest moved up
            at, k = offs[0], draw(st.integers(1, 8))
            for other in entries:
                moved = _ints(header[other], "data_offsets")
                if moved and len(moved) == 2 and moved[0] >= at:
                    header[other]["data_offsets"] = [o + k for o in moved]
            data[at:at] = rnd.randbytes(k)
        elif kind == "overlap" and offs:
            offs[0] -= draw(st.integers(1, 8))
        elif kind == "raw" and key is not None:
            where = draw(st.sampled_from(["dtype", "shape", "data_offsets", "shape[0]", "data_offsets[1]", "entry"]))
            token = Raw(draw(st.sampled_from(RAW_TOKENS)))
            if where == "entry":
                header[key] = token
                entries.remove(key)
            elif where == "shape[0]" and shape:
                shape[0] = token
            elif where == "data_offsets[1]" and offs and len(offs) > 1:
                offs[1] = token
            elif not where.endswith("]"):
                e[where] = token
        elif kind == "extra" and key is not None:
            e[draw(st.sampled_from(["z", "extra", "dtype2"]))] = Raw(draw(st.sampled_from(RAW_TOKENS)))
        elif kind == "nest" and key is not None:  # the entry is at depth 2, so the limit is around here
            depth = draw(st.integers(MAX_HEADER_DEPTH - 4, MAX_HEADER_DEPTH + 2))
            e["z"] = Raw("[" * depth + "]" * depth)
        elif kind == "drop_field" and key is not None:
            e.pop(draw(st.sampled_from(["dtype", "shape", "data_offsets"])), None)
        elif kind == "metadata":
            header["__metadata__"] = Raw(draw(st.sampled_from(
                ["null", "{}", '{"a": 1}', '{"a": "b"}', "[]", '"x"', '{"a": null}', '{"a": ["b"]}'])))
        elif kind == "drop_entry" and key is not None:
            del header[key]
            entries.remove(key)
        elif kind in ("duplicate", "surrogate_name", "truncate", "append", "length", "garbage", "pad", "lead",
                      "bom"):
            byte_level.append(kind)
    text = _serialise(header, ascii_only=draw(st.booleans()), compact=draw(st.booleans()))
    for kind in byte_level:
        if kind == "duplicate" and header:  # repeat the first "name": {...} (or the metadata) verbatim
            first = next(iter(header))
            body = _serialise({first: header[first]}, ascii_only=True, compact=True)[1:-1]
            text = text.replace("{", "{" + body + ",", 1)
            duplicate = True
        elif kind == "surrogate_name" and entries and entries[0] in header:
            name = json.dumps(entries[0])
            if name in text:
                text = text.replace(name, '"\\ud800' + name[1:], 1)
    raw = text.encode()
    if "pad" in byte_level:
        raw += draw(WHITESPACE | st.sampled_from(["\x00", "\x0c", "x", " \x00"])).encode()
    if "lead" in byte_level:
        raw = draw(WHITESPACE).encode() + raw
    if "bom" in byte_level:
        raw = b"\xef\xbb\xbf" + raw
    if "garbage" in byte_level and raw:
        raw = bytearray(raw)
        for _ in range(draw(st.integers(1, 3))):
            raw[rnd.randrange(len(raw))] = rnd.randrange(256)
        raw = bytes(raw)
    length = len(raw)
    if "length" in byte_level:
        length = max(0, length + draw(st.integers(-8, 8)))
    out = struct.pack("<Q", length) + raw + bytes(data)
    if "truncate" in byte_level:
        out = out[: draw(st.integers(0, len(out)))]
    if "append" in byte_level:
        out += rnd.randbytes(draw(st.integers(1, 8)))
    return out, duplicate


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=safetensors_files())
def test_we_accept_exactly_what_the_library_accepts(folder, case):
    content, repeated_key = case
    agree(write(folder, content), we_refuse=repeated_key)


@settings(max_examples=60, deadline=None)
@given(tensors=st.dictionaries(NAMES.filter(bool), st.tuples(st.sampled_from(
    [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool, torch.float8_e4m3fn]),
    st.lists(st.integers(0, 3), max_size=3)), max_size=4), seed=st.integers(0, 2**16))
def test_files_written_by_the_library_are_read_identically(folder, tensors, seed):
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (dtype, shape) in tensors.items():
        count = int(torch.Size(shape).numel())
        if dtype is torch.bool:
            sd[name] = torch.randint(0, 2, shape, generator=gen).bool()
        else:  # any bytes (NaNs included: tensors are compared byte for byte)
            sd[name] = torch.randint(0, 256, (count * dtype.itemsize,), dtype=torch.uint8, generator=gen).view(
                dtype).reshape(shape)
    path = folder / "saved.safetensors"
    save_file(sd, str(path), metadata={"format": "pt"})
    assert agree(path)


# -- the rules, one by one (each checked against the library too) -----------------------------
def _with(**fields: Any) -> dict:
    return {**ENTRY, **fields}


CASES: dict[str, tuple[bytes, bool]] = {  # name: (file, whether it loads)
    "valid": (file_bytes({"a": ENTRY}, b"\0" * 8), True),
    "empty header": (file_bytes({}), True),
    "unsorted entries": (file_bytes({"b": _with(data_offsets=[8, 16]), "a": ENTRY}, b"\0" * 16), True),
    "zero-size tensors share an offset": (file_bytes({"a": _with(shape=[0], data_offsets=[0, 0]),
                                                      "b": _with(shape=[0], data_offsets=[0, 0])}), True),
    "trailing bytes after the data": (file_bytes({"a": ENTRY}, b"\0" * 9), False),
    "truncated data": (file_bytes({"a": ENTRY}, b"\0" * 7), False),
    "gap": (file_bytes({"a": ENTRY, "b": _with(data_offsets=[12, 20])}, b"\0" * 20), False),
    "overlap": (file_bytes({"a": ENTRY, "b": _with(data_offsets=[4, 12])}, b"\0" * 12), False),
    "not starting at 0": (file_bytes({"a": _with(data_offsets=[4, 12])}, b"\0" * 12), False),
    "reversed offsets": (file_bytes({"a": _with(shape=[0], data_offsets=[8, 0])}, b"\0" * 8), False),
    "three offsets": (file_bytes({"a": _with(data_offsets=[0, 8, 8])}, b"\0" * 8), False),
    "wrong byte length": (file_bytes({"a": _with(shape=[3])}, b"\0" * 8), False),
    "negative dimension": (file_bytes({"a": _with(shape=[-1])}, b"\0" * 8), False),
    "boolean dimension": (file_bytes(None, b"\0" * 4, raw=b'{"a": {"dtype": "F32", "shape": [true], '
                                                          b'"data_offsets": [0, 4]}}'), False),
    "float dimension": (file_bytes({"a": _with(shape=[2.0])}, b"\0" * 8), False),
    "minus zero": (file_bytes(None, raw=b'{"a": {"dtype": "F32", "shape": [-0], "data_offsets": [0, 0]}}'), False),
    "NaN dimension": (file_bytes(None, b"\0" * 8, raw=b'{"a": {"dtype": "F32", "shape": [NaN], '
                                                      b'"data_offsets": [0, 8]}}'), False),
    "Infinity offset": (file_bytes(None, b"\0" * 8, raw=b'{"a": {"dtype": "F32", "shape": [2], '
                                                        b'"data_offsets": [0, Infinity]}}'), False),
    "1e400 anywhere": (file_bytes(None, b"\0" * 8, raw=b'{"a": {"dtype": "F32", "shape": [2], '
                                                       b'"data_offsets": [0, 8], "z": 1e400}}'), False),
    "integer beyond 64 bits": (file_bytes({"a": _with(shape=[2**64, 0], data_offsets=[0, 0])}), False),
    "element count overflows": (file_bytes({"a": _with(shape=[2**63, 2**63, 0], data_offsets=[0, 0])}), False),
    "byte size overflows": (file_bytes({"a": _with(dtype="F64", shape=[2**61], data_offsets=[0, 0])}), False),
    "zero-size, huge dims": (file_bytes({"a": _with(shape=[2**63 - 1, 0], data_offsets=[0, 0])}), True),
    "dimension torch cannot take": (file_bytes({"a": _with(shape=[0, 2**63], data_offsets=[0, 0])}), False),
    "unknown dtype": (file_bytes({"a": _with(dtype="f32")}, b"\0" * 8), False),
    "F4 packs two per byte": (file_bytes({"a": _with(dtype="F4", shape=[3, 2], data_offsets=[0, 3])}, b"\1" * 3),
                              True),
    "F4 odd element count": (file_bytes({"a": _with(dtype="F4", shape=[1], data_offsets=[0, 1])}, b"\0"), False),
    "F6 (torch has no such dtype)": (file_bytes({"a": _with(dtype="F6_E2M3", shape=[4], data_offsets=[0, 3])},
                                                b"\0" * 3), False),
    "missing field": (file_bytes({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8), False),
    "extra field is ignored": (file_bytes({"a": _with(z=[[1], {"k": None}])}, b"\0" * 8), True),
    "field given twice": (file_bytes(None, b"\0" * 8, raw=b'{"a": {"dtype": "F32", "dtype": "F32", "shape": [2], '
                                                          b'"data_offsets": [0, 8]}}'), False),
    "entry is a string": (file_bytes({"a": "x"}), False),
    "header is a list": (file_bytes([]), False),
    "metadata of strings": (file_bytes({"__metadata__": {"format": "pt"}, "a": ENTRY}, b"\0" * 8), True),
    "metadata null": (file_bytes({"__metadata__": None, "a": ENTRY}, b"\0" * 8), True),
    "metadata with a number": (file_bytes({"__metadata__": {"x": 1}, "a": ENTRY}, b"\0" * 8), False),
    "metadata not a map": (file_bytes({"__metadata__": ENTRY}, b"\0" * 8), False),
    "metadata twice": (file_bytes(None, b"\0" * 8, raw=b'{"__metadata__": {}, "__metadata__": {}, "a": '
                                                       + json.dumps(ENTRY).encode() + b"}"), False),
    "whitespace padding": (file_bytes(None, b"\0" * 8, raw=b" \n\t" + json.dumps({"a": ENTRY}).encode()
                                      + b"    \r\n"), True),
    "NUL padding": (file_bytes(None, b"\0" * 8, raw=json.dumps({"a": ENTRY}).encode() + b"\0"), False),
    "form feed padding": (file_bytes(None, b"\0" * 8, raw=json.dumps({"a": ENTRY}).encode() + b"\x0c"), False),
    "UTF-8 BOM": (file_bytes(None, b"\0" * 8, raw=b"\xef\xbb\xbf" + json.dumps({"a": ENTRY}).encode()), False),
    "not UTF-8": (file_bytes(None, b"\0" * 8, raw=b'{"\xff": ' + json.dumps(ENTRY).encode() + b"}"), False),
    "lone surrogate": (file_bytes(None, b"\0" * 8, raw=b'{"\\ud800": ' + json.dumps(ENTRY).encode() + b"}"), False),
    "surrogate pair": (file_bytes(None, b"\0" * 8, raw=b'{"\\ud83d\\ude00": ' + json.dumps(ENTRY).encode() + b"}"),
                       True),
    "control character": (file_bytes(None, b"\0" * 8, raw=b'{"a\x01": ' + json.dumps(ENTRY).encode() + b"}"), False),
    "nesting at the limit": (file_bytes(None, b"\0" * 8, raw=json.dumps({"a": _with(z="@")}).encode().replace(
        b'"@"', b"[" * (MAX_HEADER_DEPTH - 2) + b"]" * (MAX_HEADER_DEPTH - 2))), True),
    "nesting past the limit": (file_bytes(None, b"\0" * 8, raw=json.dumps({"a": _with(z="@")}).encode().replace(
        b'"@"', b"[" * (MAX_HEADER_DEPTH - 1) + b"]" * (MAX_HEADER_DEPTH - 1))), False),
    "nesting deep enough for Python's recursion limit": (file_bytes(None, raw=b"[" * 100_000 + b"]" * 100_000),
                                                         False),
    "header too short for its length": (struct.pack("<Q", 100) + b"{}", False),
    "file shorter than 8 bytes": (b"\x01\x02", False),
    "header length over the limit": (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_rule_agrees_with_the_library(folder, case):
    content, loads = CASES[case]
    path = write(folder, content)
    assert (library(path) is not None) == loads  # the rule as the library has it
    assert agree(path) == loads


def test_deliberate_differences_from_the_library(folder):
    entry = json.dumps(ENTRY)
    for raw in (b'{"a": ["F32", [2], [0, 8]]}',  # an entry as an array (serde accepts a struct as a sequence)
                b'{"a": {"dtype": {"F32": null}, "shape": [2], "data_offsets": [0, 8]}}',  # dtype as a map
                f'{{"a": {entry}, "a": {entry}}}'.encode(),  # a name twice (the library keeps the last)
                f'{{"a": {{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, "a": {entry}}}'.encode(),
                f'{{"__metadata__": {{"k": "1", "k": "2"}}, "a": {entry}}}'.encode()):  # a metadata key twice
        path = write(folder, file_bytes(None, b"\0" * 8, raw=raw))
        assert library(path) is not None, raw  # if the library starts refusing these, drop them from here
        with pytest.raises(CheckpointError) as err:
            SafetensorsFile(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_refusals_are_one_line_and_say_why(folder):
    def why(content: bytes) -> str:
        path = write(folder, content)
        with pytest.raises(CheckpointError) as err:
            SafetensorsFile(path)
        text = str(err.value)
        assert "\n" not in text and text.startswith(f"{path}: ")
        return text

    assert "gap, an overlap" in why(CASES["gap"][0])
    assert "nested deeper than 127" in why(CASES["nesting deep enough for Python's recursion limit"][0])
    assert "NaN is not a JSON number" in why(CASES["NaN dimension"][0])
    assert "not a list of non-negative integers" in why(CASES["boolean dimension"][0])
    assert "overflows 64 bits" in why(CASES["element count overflows"][0])
    assert "not UTF-8" in why(CASES["not UTF-8"][0])
    assert "appears twice" in why(file_bytes(None, raw=b'{"a": {}, "a": {}}'))
    assert "cover 8" in why(CASES["trailing bytes after the data"][0])
    text = why(CASES["F6 (torch has no such dtype)"][0])
    assert "F6_E2M3" in text and "cannot hold" in text
    long_name = "n" * 10_000
    assert len(why(file_bytes({long_name: _with(shape=[3])}, b"\0" * 8))) < 400  # names are cut short


def test_the_header_length_limit_is_the_librarys(folder):
    path = folder / "long-header.safetensors"
    with path.open("wb") as f:  # exactly at the limit: a header padded with spaces, which the library allows
        f.write(struct.pack("<Q", MAX_HEADER_BYTES) + b"{}" + b" " * (MAX_HEADER_BYTES - 2))
    try:
        assert agree(path)
    finally:
        path.unlink()


# -- LoRA files go through the same checks ----------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle", "empty", "trailing", "folder", "missing"])
def test_a_damaged_lora_file_is_one_line(folder, damage):
    from vidcore.lora import read_lora_file

    path = folder / "style.safetensors"
    good = {"blocks.0.fc1.lora_A.weight": torch.ones(2, 8), "blocks.0.fc1.lora_B.weight": torch.ones(8, 2)}
    if path.is_dir():
        path.rmdir()
    save_file(good, str(path))
    assert set(read_lora_file(path)) == set(good)
    content = path.read_bytes()
    if damage == "folder":
        path.unlink()
        path.mkdir()
    elif damage == "missing":
        path.unlink()
    else:
        path.write_bytes({"truncated": content[:-5], "garbage": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
                          "pickle": b"\x80\x04\x95" + b"\0" * 40, "empty": b"", "trailing": content + b"\0"}[damage])
    with pytest.raises(CheckpointError) as err:
        read_lora_file(path)
    text = str(err.value)
    assert "\n" not in text and "LoRA file" in text and str(path) in text
    if damage not in ("folder", "missing"):
        assert library(path) is None  # the library refuses these too (with its own exception type)
        assert "not a valid safetensors file" in text and "download it again" in text
    else:
        assert ("is a folder" if damage == "folder" else "does not exist") in text

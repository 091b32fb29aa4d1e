"""Checkpoint files: finding them, reading their metadata, comparing them with a model, and the one loading recipe.

Every component of every backend loads the same way (`load_component`): built
on ``meta``, names and shapes read from headers and checked strictly, then
each tensor read once, straight into its target device and dtype. The
functions take what they need, a `CheckpointLayout` and a key map, never a
whole backend (``name``, the backend's, only words the messages). One module per job:

- `layout`: `CheckpointLayout` (files per component, shared-file prefixes) and the `KeyMap` type;
- `files`: a component's files in a folder, shard indexes resolved and checked;
- `safetensors_header`: the strict safetensors header parser (`SafetensorsFile`);
- `formats`: reading weight files (safetensors; ``.pth`` only with ``weights_only``), `read_header`;
- `keymap`: checkpoint names -> module names (`map_names`, `rename_keys`);
- `compare`: checkpoint tensors against a meta-built module (`Mismatch`, `compare`);
- `loading`: assign, convert, `init_non_persistent`, `load_component`;
- `fingerprint`: sizes and cheap hashes for run records.

Plugin authors, two hooks: ``Backend.key_map(component, names)`` returns
``{checkpoint name: module name}`` (a name left out, or mapped to ``None``, is
skipped on purpose; `rename_keys` builds such maps from regex rules), and
``init_non_persistent(device)`` on any submodule re-creates buffers that
checkpoints do not hold (see `vidcore.checkpoints.loading`).
"""

from __future__ import annotations

from .compare import Mismatch, compare, expected_tensors, tied_names
from .files import INDEX_SUFFIX, component_files, fetch_hint, find_component_files
from .fingerprint import fingerprint
from .formats import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, TensorSource, read_header, read_metadata
from .info import TensorInfo, dtype_name
from .keymap import map_names, rename_keys
from .layout import CheckpointLayout, KeyMap, same_names
from .loading import Placement, init_non_persistent, load_component, load_components
from .safetensors_header import MAX_HEADER_BYTES, MAX_HEADER_DEPTH, ST_BITS, ST_DTYPES, SafetensorsFile

__all__ = [
    "INDEX_SUFFIX", "MAX_HEADER_BYTES", "MAX_HEADER_DEPTH", "PICKLE_SUFFIXES", "SAFETENSORS_SUFFIXES", "ST_BITS",
    "ST_DTYPES", "CheckpointLayout", "KeyMap", "Mismatch", "Placement", "SafetensorsFile", "TensorInfo",
    "TensorSource", "compare", "component_files", "dtype_name", "expected_tensors", "fetch_hint",
    "find_component_files", "fingerprint", "init_non_persistent", "load_component", "load_components",
    "map_names", "read_header", "read_metadata", "rename_keys", "same_names", "tied_names",
]

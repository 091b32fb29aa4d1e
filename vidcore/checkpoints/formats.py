"""Reading weight files: safetensors through the strict header parser, ``.pth`` only with ``weights_only``.

Untrusted files are never unpickled: ``.pth``/``.pt``/``.bin``/``.ckpt`` go
through ``torch.load(weights_only=True)``, which refuses pickles that need
code. They are memory-mapped (``mmap=True``): a tensor that needs no
conversion on CPU stays backed by the file (copy-on-write), as torch does.
Nested dicts are flattened with dots (``{"module": {...}}`` reads as ``module.*``).
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from .info import TensorInfo, dtype_name
from .safetensors_header import SafetensorsFile

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


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
        return SafetensorsFile(path).infos()
    if path.name.endswith(PICKLE_SUFFIXES):
        return {k: TensorInfo(tuple(t.shape), dtype_name(t.dtype)) for k, t in _pth_tensors(path, "meta").items()}
    raise CheckpointError(f"{path}: unknown weight format; expected .safetensors or .pth/.pt/.bin")


def read_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file (checked like its header; no tensor data read)."""
    return dict(SafetensorsFile(Path(path)).metadata)


class TensorSource:
    """All tensors of one component across its files, read lazily by checkpoint name."""

    def __init__(self, files: Iterable[Path]):
        self.where: dict[str, tuple[Path, Any]] = {}
        self.infos: dict[str, TensorInfo] = {}
        for path in files:
            if path.name.endswith(SAFETENSORS_SUFFIXES):
                st = SafetensorsFile(path)
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

"""Run records: the JSON saved beside each video with everything needed to reproduce it.

``vidcore generate --from-record RUN.json`` rebuilds the request from
``request`` and re-runs it with the same backend, memory preset and dtype.
A record is written last and marked ``complete``, so a batch can treat "record
present and complete" as "this video is done".
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import resource
import sys
from pathlib import Path
from typing import Any

import torch

from .errors import InvalidRequestError

RECORD_VERSION = 1


def versions() -> dict[str, Any]:
    from . import __version__
    from .plugins import plugin_status

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "vidcore": __version__,
        "plugins": {p.name: p.version for p in plugin_status() if p.name != "vidcore"},
        "platform": platform.platform(),
    }


def device_info(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)}
    return {"type": device.type, "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}


def peak_memory(device: torch.device) -> dict[str, Any]:
    """Peak accelerator memory of this run (CUDA) and peak resident memory of this process."""
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss = rss_kib * (1 if sys.platform == "darwin" else 1024)
    out: dict[str, Any] = {"process_peak_rss_gib": round(rss / 2**30, 3)}
    if device.type == "cuda" and torch.cuda.is_available():
        out["accelerator_peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return out


def make_record(*, request: dict[str, Any], plugin: str | None, memory: dict[str, Any], dtype: str | None,
                device: torch.device, checkpoint: dict[str, Any] | None, wall_time_s: float,
                timings: dict[str, float]) -> dict[str, Any]:
    return {
        "vidcore_record": RECORD_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "backend": request["backend"],
        "plugin": plugin,
        "request": request,
        "memory": memory,
        "dtype": dtype,
        "checkpoint": checkpoint,
        "device": device_info(device),
        "versions": versions(),
        "wall_time_s": round(wall_time_s, 3),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "peak_memory": peak_memory(device),
        "complete": False,
    }


def read_record(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InvalidRequestError(f"run record {str(p)!r} does not exist")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"run record {str(p)!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "request" not in data or "backend" not in data:
        raise InvalidRequestError(f"{str(p)!r} is not a vidcore run record (no 'request'/'backend')")
    if data.get("vidcore_record", 0) > RECORD_VERSION:
        raise InvalidRequestError(f"run record {str(p)!r} is from a newer vidcore; upgrade vidcore to replay it")
    return data


def is_complete(path: str | Path) -> bool:
    """True when ``path`` is a readable record marked complete (used to resume batches)."""
    try:
        return bool(read_record(path).get("complete"))
    except InvalidRequestError:
        return False

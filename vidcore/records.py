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
    from .plugins import plugin_status
    from .version import __version__

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


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_record(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InvalidRequestError(f"run record {str(p)!r} does not exist")
    try:
        data = json.loads(p.read_bytes(), parse_constant=_refuse_constant)
    except OSError as exc:
        raise InvalidRequestError(f"run record {str(p)!r} cannot be read ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidRequestError(f"run record {str(p)!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "request" not in data or "backend" not in data:
        raise InvalidRequestError(f"{str(p)!r} is not a vidcore run record (no 'request'/'backend')")
    version = data.get("vidcore_record", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidRequestError(f"run record {str(p)!r} has a bad 'vidcore_record' version {version!r}")
    if version > RECORD_VERSION:
        raise InvalidRequestError(f"run record {str(p)!r} is from a newer vidcore; upgrade vidcore to replay it")
    return data


def is_complete(path: str | Path) -> bool:
    """True when ``path`` is a readable record marked complete (used to resume batches)."""
    try:
        return bool(read_record(path).get("complete"))
    except InvalidRequestError:
        return False


def replay_settings(record: dict[str, Any], *, source: str = "run record") -> dict[str, Any]:
    """What ``--from-record`` needs from a record, each value checked as strictly as a CLI flag.

    Returns ``backend`` (the registered object), ``request`` (checked with
    `vidcore.request.check_request`), ``memory``, ``dtype``, ``ckpt`` and
    ``loras`` (`vidcore.lora.LoraSpec`: path, scale, components, mode). A record is a file anyone can
    edit, so nothing in it is trusted: a wrong type is one line, before any work.
    """
    from . import validate
    from .plugins import get_backend
    from .request import Request, check_request

    req_data = record.get("request")
    if not isinstance(req_data, dict):
        raise InvalidRequestError(f"{source} 'request' must be a JSON object; got {type(req_data).__name__}")
    backend_name = req_data.get("backend")
    if not isinstance(backend_name, str):
        raise InvalidRequestError(f"{source} has no backend name in its 'request'; it is damaged")
    backend = get_backend(backend_name)
    req = check_request(backend, Request.from_dict(req_data, source=source))
    memory = record.get("memory") or {}
    preset = memory.get("preset") if isinstance(memory, dict) else None
    if preset is not None and not isinstance(preset, str):
        raise InvalidRequestError(f"{source} 'memory.preset' must be a preset name; got {preset!r}")
    dtype = record.get("dtype")
    if dtype is not None and not isinstance(dtype, str):
        raise InvalidRequestError(f"{source} 'dtype' must be fp32, bf16 or fp16; got {dtype!r}")
    checkpoint = record.get("checkpoint") or {}
    ckpt = checkpoint.get("dir") if isinstance(checkpoint, dict) else None
    if ckpt is not None and not isinstance(ckpt, str):
        raise InvalidRequestError(f"{source} 'checkpoint.dir' must be a folder path; got {ckpt!r}")
    loras = record.get("loras") or []
    if not isinstance(loras, list):
        raise InvalidRequestError(f"{source} 'loras' must be a list; got {type(loras).__name__}")
    specs = []
    for i, item in enumerate(loras):
        from .lora import LoraSpec, lora_components

        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise InvalidRequestError(f"{source} 'loras[{i}]' needs a 'path' string")
        scale = validate.number(f"{source} loras[{i}].scale", item.get("scale", 1.0), lo=-100.0, hi=100.0)
        mode = item.get("mode", "hook")
        if mode not in ("hook", "merge"):
            raise InvalidRequestError(f"{source} 'loras[{i}].mode' must be 'hook' or 'merge'; got {mode!r}")
        comps = item.get("components")
        if comps is not None and (not isinstance(comps, list) or not all(isinstance(c, str) for c in comps)):
            raise InvalidRequestError(f"{source} 'loras[{i}].components' must be a list of component names")
        lora_components(backend, comps, path=item["path"])
        specs.append(LoraSpec(item["path"], scale, tuple(comps) if comps else None, mode))
    return {"backend": backend, "request": req, "memory": preset, "dtype": dtype, "ckpt": ckpt, "loras": specs}


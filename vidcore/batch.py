"""`vidcore batch`: many videos, resumable, sharded over torchrun ranks and hosts.

Each line of the JSONL file is one video: ``{"prompt": ..., <any generate setting>}``. Every
rank takes the lines whose index is congruent to its rank modulo the world size (ranks come from
torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; no collective is needed). A video whose run
record is present and marked complete is done and never redone, so a killed or preempted batch
resumes where it stopped; a failing prompt is recorded in ``<name>.error.json`` and the rest go on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import InvalidRequestError, VidcoreError
from .fileio import write_json_atomic
from .records import is_complete
from .video import record_path

log = logging.getLogger(__name__)
SETTINGS = {"prompt", "negative", "image", "video", "size", "frames", "steps", "sampler", "guidance", "seed",
            "name", "backend"}


@dataclass
class Job:
    index: int
    name: str
    settings: dict[str, Any]

    def output(self, out_dir: Path) -> Path:
        return out_dir / f"{self.name}.mp4"


@dataclass
class Summary:
    rank: int
    world: int
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        per = sum(self.seconds.values()) / len(self.seconds) if self.seconds else 0.0
        return (f"rank {self.rank}/{self.world}: {len(self.done)} done, {len(self.failed)} failed, "
                f"{len(self.skipped)} skipped, {per:.1f} s per video")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-") or "video"


def read_jobs(path: str | Path, *, base_seed: int = 0) -> list[Job]:
    """Parse and check every line before any work; seeds default to ``base_seed + index``."""
    p = Path(path)
    if not p.is_file():
        raise InvalidRequestError(f"prompts file {str(p)!r} does not exist")
    jobs, names = [], set()
    for lineno, raw in enumerate(p.read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{p.name} line {lineno} is not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise InvalidRequestError(f"{p.name} line {lineno} needs a \"prompt\" string")
        unknown = set(item) - SETTINGS
        if unknown:
            raise InvalidRequestError(f"{p.name} line {lineno} has unknown settings {sorted(unknown)}; "
                                      f"allowed: {', '.join(sorted(SETTINGS))}")
        index = len(jobs)
        item.setdefault("seed", base_seed + index)
        name = str(item.pop("name", None) or f"{index:05d}-{_slug(item['prompt'])}")
        if name in names:
            raise InvalidRequestError(f"{p.name} line {lineno}: duplicate output name {name!r}")
        names.add(name)
        jobs.append(Job(index, name, item))
    if not jobs:
        raise InvalidRequestError(f"prompts file {str(p)!r} has no prompts")
    return jobs


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _clean_partials(out_dir: Path, jobs: list[Job]) -> None:
    """Remove temp files of killed writes and videos whose record never completed."""
    for tmp in out_dir.glob(".*.part*"):
        tmp.unlink(missing_ok=True)
    for job in jobs:
        mp4 = job.output(out_dir)
        if mp4.exists() and not is_complete(record_path(mp4)):
            mp4.unlink()


def _raise_on_sigterm(signum, frame):  # pragma: no cover - exercised in a subprocess test
    raise SystemExit(128 + signum)


def run_batch(prompts: str | Path, out_dir: str | Path, *, backend: str, ckpt: str | None = None,
              memory: str = "resident", dtype: str | None = None, device: str | None = None,
              base_seed: int = 0, progress: bool | None = None) -> Summary:
    from .pipeline import load
    from .plugins import get_backend
    from .request import load_inputs, resolve

    out = Path(out_dir)
    if not out.is_dir():
        raise InvalidRequestError(f"output folder {str(out)!r} does not exist; create it first")
    jobs = read_jobs(prompts, base_seed=base_seed)
    b = get_backend(backend)
    for job in jobs:
        if job.settings.get("backend", backend) != backend:
            raise InvalidRequestError(f"prompt {job.name!r} asks for backend {job.settings['backend']!r}; "
                                      f"one batch runs one backend ({backend!r})")
    rank, world, local_rank = dist_info()
    mine = [j for j in jobs if j.index % world == rank]
    if rank == 0:
        _clean_partials(out, jobs)
    summary = Summary(rank, world)
    todo = []
    for job in mine:
        if is_complete(record_path(job.output(out))):
            summary.skipped.append(job.name)
        else:
            todo.append(job)
    if not todo:
        return summary
    if device is None and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        pipe = load(b, ckpt, memory=memory, dtype=dtype, device=device)
        for job in todo:
            t0 = time.perf_counter()
            mp4 = job.output(out)
            try:
                settings = {k: v for k, v in job.settings.items() if k not in ("prompt", "backend")}
                req = resolve(b, job.settings["prompt"], **settings)
                video = pipe.run(req, load_inputs(b, req), progress=progress)
                video.save(mp4, overwrite=True)
                (out / f"{job.name}.error.json").unlink(missing_ok=True)
                summary.done.append(job.name)
                summary.seconds[job.name] = time.perf_counter() - t0
            except (VidcoreError, RuntimeError, ValueError) as exc:
                summary.failed.append(job.name)
                write_json_atomic(out / f"{job.name}.error.json", {
                    "name": job.name, "settings": job.settings, "error": f"{type(exc).__name__}: {exc}",
                }, overwrite=True)
                log.warning("prompt %s failed: %s", job.name, exc)
    finally:
        signal.signal(signal.SIGTERM, previous)
    write_json_atomic(out / f"summary.rank{rank}.json", {
        "rank": rank, "world": world, "done": summary.done, "failed": summary.failed,
        "skipped": summary.skipped, "seconds": summary.seconds}, overwrite=True)
    return summary

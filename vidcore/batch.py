"""`vidcore batch`: many videos, resumable, sharded over torchrun ranks and hosts.

Each line of the JSONL file is one video: ``{"prompt": ..., <any generate setting>}``. Every
line is parsed and its request resolved against the backend before any weights load, so a bad
line costs milliseconds and is named by its line number. Every rank takes the lines whose index
is congruent to its rank modulo the world size (ranks come from torchrun's
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; no collective is needed).

A video whose run record is present and marked complete is done and never redone, so a killed
or preempted batch resumes where it stopped; a failing prompt is recorded in
``<name>.error.json`` and the rest go on. Each video is generated under its claim
(`vidcore.fileio.claim`): a video another live process is writing is skipped as busy and left
alone; a video without a complete record, and the temporary files of a killed writer, are
removed only once their claim is ours. A job's ``name`` is a plain file name in ``--out``
(no folders, no leading dot), so nothing outside ``--out`` is ever read, written or removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import InvalidRequestError, OutputBusyError, OutputError, VidcoreError
from .fileio import check_name, check_writable, claim, remove_output, sweep, write_json_atomic
from .records import is_complete
from .video import record_path

log = logging.getLogger(__name__)
SETTINGS = {"prompt", "negative", "image", "video", "size", "frames", "fps", "steps", "sampler", "schedule", "shift",
            "guidance", "seed", "task", "name", "backend"}
_WINDOWS_CHARS = set('<>:"|?*')
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


@dataclass
class Job:
    index: int
    name: str
    settings: dict[str, Any]
    line: int = 0
    request: Any = None  # the resolved `vidcore.request.Request`, set by `resolve_jobs`

    def output(self, out_dir: Path) -> Path:
        return out_dir / f"{self.name}.mp4"


@dataclass
class Summary:
    rank: int
    world: int
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # being written by another live process: left to it
    seconds: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        per = sum(self.seconds.values()) / len(self.seconds) if self.seconds else 0.0
        busy = f", {len(self.busy)} busy (another process is writing them)" if self.busy else ""
        return (f"rank {self.rank}/{self.world}: {len(self.done)} done, {len(self.failed)} failed, "
                f"{len(self.skipped)} skipped{busy}, {per:.1f} s per video")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-") or "video"


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain, portable output name (None when it is); length is checked separately."""
    if not name.strip():
        return "is empty"
    if "/" in name or "\\" in name or name in (".", ".."):
        return "contains a path separator; outputs always go in --out"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "contains a control character"
    if name.startswith("."):
        return "starts with a dot (hidden files and '..' are not allowed)"
    bad = sorted(_WINDOWS_CHARS.intersection(name))
    if bad:
        return f"contains {''.join(bad)!r}, which Windows does not allow in file names"
    if name[-1] in " .":
        return "ends with a space or a dot"
    if name.split(".")[0].lower() in _WINDOWS_DEVICES:
        return "is a reserved device name on Windows"
    if name.endswith(".error") or re.fullmatch(r"summary\.rank\d+", name):
        return "would collide with the batch's own files (*.error.json, summary.rankN.json)"
    return None


def read_jobs(path: str | Path, *, base_seed: int = 0, out_dir: str | Path | None = None) -> list[Job]:
    """Parse and check every line before any work; seeds default to ``base_seed + index``."""
    p = Path(path)
    if not p.is_file():
        raise InvalidRequestError(f"prompts file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequestError(f"prompts file {str(p)!r} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"prompts file {str(p)!r} is not UTF-8 text ({exc.reason})") from None
    folder = Path(out_dir) if out_dir is not None else Path(".")
    jobs, names = [], {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise InvalidRequestError(f"{p.name} line {lineno} is not valid JSON ({why})") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise InvalidRequestError(f"{p.name} line {lineno} needs a \"prompt\" string")
        unknown = set(item) - SETTINGS
        if unknown:
            raise InvalidRequestError(f"{p.name} line {lineno} has unknown settings {sorted(unknown)}; "
                                      f"allowed: {', '.join(sorted(SETTINGS))}")
        index = len(jobs)
        item.setdefault("seed", base_seed + index)
        name = item.pop("name", None)
        if name is None:
            name = f"{index:05d}-{_slug(item['prompt'])}"
        elif not isinstance(name, str):
            raise InvalidRequestError(f"{p.name} line {lineno}: \"name\" must be a string; got {name!r}")
        problem = name_problem(name)
        if problem:
            raise InvalidRequestError(f"{p.name} line {lineno}: output name {name!r} {problem}; give a plain file "
                                      "name without extension, e.g. \"clip-1\"")
        try:
            check_name(name, folder, extra=len(".mp4"))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{p.name} line {lineno}: {exc}") from None
        folded = name.casefold()
        if folded in names:
            same = "duplicate output name" if names[folded][1] == name else "output name differs only in case from"
            raise InvalidRequestError(f"{p.name} line {lineno}: {same} {names[folded][1]!r} (line "
                                      f"{names[folded][0]}); names must be unique, ignoring case")
        names[folded] = (lineno, name)
        jobs.append(Job(index, name, item, line=lineno))
    if not jobs:
        raise InvalidRequestError(f"prompts file {str(p)!r} has no prompts")
    return jobs


def resolve_jobs(backend: Any, jobs: list[Job], *, source: str) -> None:
    """Resolve and check every job's request (settings, sizes, input files) and keep it on the job.

    A bad line raises ``"<source> line N: <what is wrong>"`` before anything is loaded or written.
    """
    from .request import load_inputs, resolve

    for job in jobs:
        settings = {k: v for k, v in job.settings.items() if k not in ("prompt", "backend")}
        try:
            req = resolve(backend, job.settings["prompt"], **settings)
            load_inputs(backend, dataclasses.replace(req))  # a copy: it may adjust the size
        except VidcoreError as exc:
            raise InvalidRequestError(f"{source} line {job.line}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"{source} line {job.line}: bad settings ({exc})") from None
        job.request = req


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _prepare(job: Job, out: Path) -> str:
    """``done``, ``busy`` or ``todo``; a todo job's dead writer's leftovers are gone (its claim was ours)."""
    mp4 = job.output(out)
    if is_complete(record_path(mp4)):
        return "done"
    try:
        with claim(mp4):  # taking it removes a killed writer's temporary files
            if is_complete(record_path(mp4)):
                return "done"
            remove_output(mp4)  # a video without a complete record: ours now, to redo
    except OutputBusyError:
        return "busy"
    return "todo"


def _raise_on_sigterm(signum, frame):  # pragma: no cover - exercised in a subprocess test
    raise SystemExit(128 + signum)


def run_batch(prompts: str | Path, out_dir: str | Path, *, backend: str, ckpt: str | None = None,
              memory: str = "resident", dtype: str | None = None, device: str | None = None,
              base_seed: int = 0, progress: bool | None = None, loras: Sequence[Any] = (),
              batch_size: int = 1) -> Summary:
    """Run every line of ``prompts`` not yet done in ``out_dir``; ``loras`` (`vidcore.lora.LoraSpec`) are
    applied once, after the weights load, and checked (against a meta build) before.

    With ``batch_size`` > 1, lines of the same shape (all settings equal but prompt, negative prompt,
    seed and input media) are denoised together, up to that many at a time (`Pipeline.run_many`): on
    a GPU that is throughput. Each video is still claimed, saved and recorded on its own; a batch that
    fails is run again one video at a time, so an error is recorded against the line that caused it.
    """
    from .validate import integer

    batch_size = integer("batch size", batch_size, lo=1, hi=1024)
    from .pipeline import load
    from .plugins import get_backend

    out = Path(out_dir)
    if not out.is_dir():
        raise InvalidRequestError(f"output folder {str(out)!r} does not exist; create it first")
    jobs = read_jobs(prompts, base_seed=base_seed, out_dir=out)
    b = get_backend(backend)
    source = Path(prompts).name
    for job in jobs:
        if job.settings.get("backend", backend) != backend:
            raise InvalidRequestError(f"{source} line {job.line} asks for backend {job.settings['backend']!r}; "
                                      f"one batch runs one backend ({backend!r})")
    resolve_jobs(b, jobs, source=source)
    if loras:
        from .lora import check_loras

        check_loras(b, list(loras))
    check_writable(out)
    rank, world, local_rank = dist_info()
    mine = [j for j in jobs if j.index % world == rank]
    if rank == 0:  # debris of other runs; each rank cleans its own jobs when it claims them
        sweep(out, skip={j.output(out).name for j in jobs})
    summary = Summary(rank, world)
    todo = []
    for job in mine:
        state = _prepare(job, out)
        if state == "todo":
            todo.append(job)
        else:
            (summary.skipped if state == "done" else summary.busy).append(job.name)
    if todo:
        if device is None and torch.cuda.is_available():
            device = f"cuda:{local_rank}"
        previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
        try:
            pipe = load(b, ckpt, memory=memory, dtype=dtype, device=device)
            for spec in loras:
                pipe.load_lora(spec.path, scale=spec.scale, components=list(spec.components or []), mode=spec.mode)
            for group in same_shape_groups(todo, batch_size):
                _run_group(pipe, b, group, out, summary, progress)
        finally:
            signal.signal(signal.SIGTERM, previous)
    summary_path = out / f"summary.rank{rank}.json"
    with claim(summary_path, wait=30.0) as c:
        write_json_atomic(summary_path, {
            "rank": rank, "world": world, "done": summary.done, "failed": summary.failed,
            "skipped": summary.skipped, "busy": summary.busy, "seconds": summary.seconds}, overwrite=True, claim=c)
    return summary


def same_shape_groups(jobs: Sequence[Job], size: int) -> list[list[Job]]:
    """Jobs in groups of at most ``size`` whose requests differ only in per-video fields, in file order."""
    from .pipeline import PER_VIDEO

    by_shape: dict[str, list[Job]] = {}
    for job in jobs:
        shape = {k: v for k, v in dataclasses.asdict(job.request).items() if k not in PER_VIDEO}
        by_shape.setdefault(json.dumps(shape, sort_keys=True, default=str), []).append(job)
    groups = [same[i:i + size] for same in by_shape.values() for i in range(0, len(same), size)]
    return sorted(groups, key=lambda g: g[0].index)


def _run_group(pipe: Any, backend: Any, group: list[Job], out: Path, summary: Summary,
               progress: bool | None) -> None:
    from .request import load_inputs

    if len(group) == 1:
        _run_job(pipe, backend, group[0], out, summary, progress)
        return
    with contextlib.ExitStack() as stack:
        mine: list[Job] = []
        for job in group:
            mp4 = job.output(out)
            try:
                stack.enter_context(claim(mp4))
            except OutputBusyError:
                summary.busy.append(job.name)
                continue
            if is_complete(record_path(mp4)):  # another process finished it since we looked
                summary.skipped.append(job.name)
                continue
            mine.append(job)
        t0 = time.perf_counter()
        videos = None
        if len(mine) > 1:
            try:
                reqs = [dataclasses.replace(j.request) for j in mine]  # load_inputs may adjust the size
                videos = pipe.run_many(reqs, [load_inputs(backend, r) for r in reqs], progress=progress)
            except (OutputError, OutputBusyError):
                raise
            except (VidcoreError, RuntimeError, ValueError) as exc:
                log.warning("a batch of %d videos failed (%s); running them one at a time", len(mine), exc)
        if videos is None:  # the claims are re-entrant: each job takes its own again
            for job in mine:
                _run_job(pipe, backend, job, out, summary, progress)
            return
        each = (time.perf_counter() - t0) / len(mine)
        for job, video in zip(mine, videos):
            video.save(job.output(out), overwrite=True)
            remove_output(out / f"{job.name}.error.json")
            summary.done.append(job.name)
            summary.seconds[job.name] = each


def _run_job(pipe: Any, backend: Any, job: Job, out: Path, summary: Summary, progress: bool | None) -> None:
    from .request import load_inputs

    mp4 = job.output(out)
    error_path = out / f"{job.name}.error.json"
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        try:
            c = stack.enter_context(claim(mp4))
        except OutputBusyError:
            summary.busy.append(job.name)
            return
        if is_complete(record_path(mp4)):  # another process finished it since we looked
            summary.skipped.append(job.name)
            return
        try:
            req = dataclasses.replace(job.request)  # load_inputs may adjust the size
            video = pipe.run(req, load_inputs(backend, req), progress=progress)
            video.save(mp4, overwrite=True)
            remove_output(error_path)
            summary.done.append(job.name)
            summary.seconds[job.name] = time.perf_counter() - t0
        except (OutputError, OutputBusyError):
            raise  # the folder itself is the problem: every later job would fail the same way
        except (VidcoreError, RuntimeError, ValueError) as exc:
            summary.failed.append(job.name)
            write_json_atomic(error_path, {
                "name": job.name, "line": job.line, "settings": job.settings,
                "error": f"{type(exc).__name__}: {exc}"}, overwrite=True, claim=c)
            log.warning("prompt %s failed: %s", job.name, exc)

"""A worker: one thread per device that keeps its pipelines loaded and runs the store's jobs one by one.

For each job it claims: a job whose video and complete run record are already
there (its server died between writing them and marking the job) is only
marked completed, so no job runs twice to completion; otherwise it runs the
pipeline with a step callback that reports progress and raises `Cancelled`
when the job is deleted or the server stops, and saves the video and its
record atomically under ``--out``. A deleted job's files are removed; a job
the server stops in the middle goes back to the queue. A job taken back from
this worker (its lease ran out on a shared store and another server runs it
now) is dropped, its files left to the attempt that holds it. While the store
cannot be reached the worker waits and tries again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..backend import Backend
from ..errors import Cancelled, VidcoreError, is_out_of_memory
from ..records import is_complete
from ..request import Request, load_inputs
from .config import ServeConfig
from .files import JobFiles
from .metrics import Metrics
from .store import Job, JobStore, StoreUnavailable

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.25
RETRY_S = (0.5, 1.0, 2.0, 5.0)


def error_of(exc: BaseException) -> dict[str, str]:
    """The API's error object for a failed run: our one-line message, or a bug named as such."""
    if isinstance(exc, VidcoreError):
        return {"code": "invalid_request", "message": str(exc)}
    if is_out_of_memory(exc):
        return {"code": "out_of_memory", "message": "out of memory; use a leaner --memory preset (e.g. low-vram), "
                "a smaller size or fewer frames"}
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return {"code": "internal_error", "message": f"internal error ({type(exc).__name__}: {first}); this is a bug in "
            "vidcore or a plugin; the server log has the traceback"}


class Worker(threading.Thread):
    def __init__(self, index: int, device: str, config: ServeConfig, store: JobStore, metrics: Metrics,
                 backends: Mapping[str, Backend], wake: threading.Event):
        super().__init__(name=f"vidcore-worker-{index}", daemon=True)
        self.device, self.config, self.store, self.metrics = device, config, store, metrics
        self.backends, self.wake = dict(backends), wake
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{index}"
        self.pipes: dict[str, Any] = {}
        self.ready = False
        self.error: str | None = None
        self.job: Job | None = None
        self._stopping = threading.Event()
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    # -- control from the server's threads ------------------------------------------------------
    def cancel(self, job_id: str) -> bool:
        """Stop the job if this worker runs it (it was deleted); True when it did."""
        with self._lock:
            if self.job is None or self.job.id != job_id:
                return False
            self._cancelled.add(job_id)
            return True

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()

    def state(self) -> dict[str, Any]:
        job = self.job
        return {"device": str(self.device), "ready": self.ready, "error": self.error,
                "job": None if job is None else job.id}

    # -- the thread -----------------------------------------------------------------------------
    def run(self) -> None:
        from ..pipeline import load

        try:
            for name, backend in self.backends.items():
                self.pipes[name] = load(backend, self.config.ckpts.get(name), memory=self.config.memory,
                                        dtype=self.config.dtype, device=self.device)
        except Exception as exc:  # noqa: BLE001 - reported by /health; the server stays up to say so
            self.error = str(exc) if isinstance(exc, VidcoreError) else error_of(exc)["message"]
            log.error("worker on %s cannot load its pipelines: %s", self.device, self.error, exc_info=True)
            return
        self.ready = True
        log.info("worker on %s ready (%s)", self.device, ", ".join(self.pipes))
        try:
            while not self._stopping.is_set():
                try:
                    job = self.store.claim(self.owner, self.pipes)
                except StoreUnavailable as exc:
                    log.warning("worker on %s: %s", self.device, exc)
                    self._stopping.wait(RETRY_S[-1])
                    continue
                if job is None:
                    self.wake.wait(0.5)
                    self.wake.clear()
                    continue
                with self._lock:
                    self.job = job
                try:
                    self._run(job)
                finally:
                    with self._lock:
                        self.job = None
                        self._cancelled.discard(job.id)
        finally:
            for pipe in self.pipes.values():
                pipe.close()

    def _run(self, job: Job) -> None:
        files = JobFiles(self.config.out, job.id)
        if is_complete(files.record) and files.video.is_file():
            log.info("job %s: finished before a restart; marking it completed", job.id)
            self._settle(job, files, None, "completed")
            return
        model = job.model
        t0 = last = time.perf_counter()
        shown = [0, 0.0]

        def on_step(info: dict[str, Any]) -> None:
            nonlocal last
            now = time.perf_counter()
            self.metrics.step_seconds.labels(model).observe(now - last)
            last = now
            if self._stopping.is_set() or job.id in self._cancelled:
                raise Cancelled()
            progress = min(99, int(100 * (int(info["i"]) + 1) / req.steps))
            if progress != shown[0] and now - shown[1] >= PROGRESS_EVERY_S:
                shown[:] = progress, now
                try:
                    held = self.store.set_progress(job.id, job.attempts, progress)
                except StoreUnavailable:
                    held = True  # only the progress shown waits; the lease says whether the job is still ours
                if not held:
                    raise Cancelled()  # deleted (or taken back) meanwhile

        try:
            req = Request.from_dict(job.request, source=f"job {job.id}")
            backend = self.backends[model]
            video = self.pipes[model].run(req, load_inputs(backend, req), callback=on_step, progress=False)
            if self._stopping.is_set() or not self._holds(job):
                raise Cancelled()
            video.save(files.video, overwrite=True)
        except Cancelled:
            if self._stopping.is_set() and job.id not in self._cancelled:
                self._requeue(job)
            elif job.id not in self._cancelled and self._taken_back(job):
                log.warning("job %s: attempt %d was taken back (its lease ran out); another server runs it",
                            job.id, job.attempts)
            else:
                files.remove_all()
                self.metrics.finished.labels("cancelled").inc()
                log.info("job %s: cancelled", job.id)
            return
        except Exception as exc:  # noqa: BLE001 - the job fails with its one line; the worker goes on
            error = error_of(exc)
            log.log(logging.WARNING if error["code"] != "internal_error" else logging.ERROR,
                    "job %s failed: %s", job.id, error["message"], exc_info=error["code"] == "internal_error")
            self._settle(job, files, error, "failed")
            return
        self.metrics.job_seconds.labels(model).observe(time.perf_counter() - t0)
        self._settle(job, files, None, "completed")

    def _settle(self, job: Job, files: JobFiles, error: dict[str, str] | None, outcome: str) -> None:
        for wait in (*RETRY_S, None):
            try:
                finished = self.store.finish(job.id, job.attempts, error=error)
                break
            except StoreUnavailable as exc:
                if wait is None or self._stopping.is_set():
                    log.error("job %s: cannot record that it is %s (%s); its lease runs out and it runs again",
                              job.id, outcome, exc)
                    return
                log.warning("job %s: %s; trying again in %g s", job.id, exc, wait)
                self._stopping.wait(wait)
        if finished:
            self.metrics.finished.labels(outcome).inc()
            log.info("job %s: %s", job.id, outcome)
        elif self._taken_back(job):  # another attempt holds it now: its files are that attempt's
            log.warning("job %s: attempt %d was taken back before it was recorded", job.id, job.attempts)
        else:  # deleted while it ran: nothing of it stays
            files.remove_all()
            self.metrics.finished.labels("cancelled").inc()

    def _holds(self, job: Job) -> bool:
        """Whether this worker's attempt still holds the job (before writing its video)."""
        try:
            now = self.store.get(job.id)
        except StoreUnavailable:
            return True  # writing is safe: the video is named by the id and saved atomically, finish is fenced
        return now is not None and now.status == "in_progress" and now.attempts == job.attempts

    def _taken_back(self, job: Job) -> bool:
        """The job is still in the store, under another attempt (not deleted); unknown counts as taken back."""
        try:
            return self.store.get(job.id) is not None
        except StoreUnavailable:
            return True

    def _requeue(self, job: Job) -> None:
        try:
            if self.store.requeue(job.id, job.attempts):
                log.info("job %s: stopped by shutdown; back in the queue", job.id)
        except StoreUnavailable as exc:
            log.warning("job %s: stopped by shutdown; %s; it goes back to the queue when its lease runs out",
                        job.id, exc)

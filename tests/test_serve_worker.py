"""The worker's job lifecycle with stand-in pipelines: done-before-a-crash, cancel, shutdown, failures."""

from __future__ import annotations

import threading
import time

import pytest
import torch

pytest.importorskip("prometheus_client")

from vidcore.errors import InvalidRequestError  # noqa: E402
from vidcore.serve.config import ServeConfig  # noqa: E402
from vidcore.serve.files import JobFiles, make_folders, new_id  # noqa: E402
from vidcore.serve.metrics import Metrics  # noqa: E402
from vidcore.serve.sqlite import SQLiteStore  # noqa: E402
from vidcore.serve.store import Job  # noqa: E402
from vidcore.serve.worker import Worker  # noqa: E402
from vidcore.video import Video  # noqa: E402


class Pipe:
    """Stands in for a Pipeline: calls the step callback ``steps`` times (running ``during`` at step 1)."""

    def __init__(self, during=None, raises: BaseException | None = None):
        self.during, self.raises, self.runs = during, raises, 0

    def run(self, req, inputs, *, callback=None, progress=None):
        self.runs += 1
        for i in range(req.steps):
            if i == 1 and self.during is not None:
                self.during()
            callback({"i": i})
        if self.raises is not None:
            raise self.raises
        frames = torch.zeros(req.frames, req.height, req.width, 3, dtype=torch.uint8)
        return Video(frames, req.fps, {"vidcore_record": 1, "backend": "toy", "request": req.to_dict()})

    def close(self):
        pass


@pytest.fixture
def setup(tmp_path, toy_registry):
    import toy_backend

    from vidcore.request import resolve

    out = tmp_path / "out"
    make_folders(out)
    store = SQLiteStore(out / "jobs.sqlite3")
    worker = Worker(0, "cpu", ServeConfig(backends=("toy",), out=out), store, Metrics(store, lambda: [worker]),
                    {"toy": toy_backend.TOY}, threading.Event())
    req = resolve(toy_backend.TOY, "a toy", steps=6, seed=3)

    def submit() -> Job:
        j = Job(id=new_id(), model="toy", prompt="a toy", request=req.to_dict(), size="16x16", seconds="0.625",
                created_at=int(time.time()))
        store.add(j, max_queued=10)
        claimed = store.claim(worker.owner, {"toy"})
        worker.job = claimed
        return claimed

    yield worker, store, out, submit
    store.close()


def finished(worker, outcome):
    return worker.metrics.finished.labels(outcome)._value.get()


def test_a_job_runs_and_completes_once(setup):
    worker, store, out, submit = setup
    worker.pipes = {"toy": Pipe()}
    job = submit()
    worker._run(job)
    files = JobFiles(out, job.id)
    assert store.get(job.id).status == "completed" and files.video.is_file() and files.record.is_file()
    assert worker.pipes["toy"].runs == 1


def test_a_job_finished_before_a_crash_is_only_marked_completed(setup):
    worker, store, out, submit = setup
    worker.pipes = {"toy": Pipe()}
    job = submit()
    worker._run(job)  # the video and its record are written ...
    store.recover()  # ... and the server died before the job was marked: simulate by taking it back
    with store._write() as db:
        db.execute("UPDATE jobs SET status = 'in_progress', attempts = attempts + 1 WHERE id = ?", (job.id,))
    again = store.get(job.id)
    worker.pipes = {"toy": Pipe(raises=AssertionError("must not run again"))}
    worker._run(again)
    assert store.get(job.id).status == "completed" and worker.pipes["toy"].runs == 0


def test_deleting_a_running_job_stops_it_and_removes_its_files(setup):
    worker, store, out, submit = setup
    job = submit()

    def delete():
        store.delete(job.id)
        assert worker.cancel(job.id)

    worker.pipes = {"toy": Pipe(during=delete)}
    worker._run(job)
    assert store.get(job.id) is None and finished(worker, "cancelled") == 1
    assert not any(p.exists() for p in (JobFiles(out, job.id).video, JobFiles(out, job.id).record))


def test_deleted_between_saving_and_marking_leaves_no_files(setup, monkeypatch):
    worker, store, out, submit = setup
    worker.pipes = {"toy": Pipe()}
    job = submit()
    real_finish = store.finish

    def finish_after_delete(*a, **kw):
        store.delete(job.id)
        return real_finish(*a, **kw)

    monkeypatch.setattr(store, "finish", finish_after_delete)
    worker._run(job)
    assert not JobFiles(out, job.id).video.exists() and finished(worker, "cancelled") == 1


def test_a_shutdown_gives_the_running_job_back_to_the_queue(setup):
    worker, store, out, submit = setup
    job = submit()
    worker.pipes = {"toy": Pipe(during=worker.stop)}
    worker._run(job)
    back = store.get(job.id)
    assert (back.status, back.progress, back.owner) == ("queued", 0, None)
    assert not JobFiles(out, job.id).video.exists()


@pytest.mark.parametrize("exc, code, message", [
    (InvalidRequestError("the one line"), "invalid_request", "the one line"),
    (RuntimeError("CUDA out of memory. Tried to allocate"), "out_of_memory", "out of memory; use a leaner"),
    (ZeroDivisionError("oops"), "internal_error", "internal error (ZeroDivisionError: oops); this is a bug"),
])
def test_failures_carry_one_line(setup, exc, code, message):
    worker, store, out, submit = setup
    worker.pipes = {"toy": Pipe(raises=exc)}
    job = submit()
    worker._run(job)
    got = store.get(job.id)
    assert got.status == "failed" and got.error["code"] == code and got.error["message"].startswith(message)
    assert finished(worker, "failed") == 1 and not JobFiles(out, job.id).video.exists()


def test_progress_is_reported_and_stays_below_100_until_done(setup, monkeypatch):
    import vidcore.serve.worker as w

    monkeypatch.setattr(w, "PROGRESS_EVERY_S", 0.0)
    worker, store, out, submit = setup
    seen = []
    job = submit()
    worker.pipes = {"toy": Pipe()}
    real = store.set_progress

    def spy(job_id, attempt, progress):
        seen.append(progress)
        return real(job_id, attempt, progress)

    monkeypatch.setattr(store, "set_progress", spy)
    worker._run(job)
    assert seen == [16, 33, 50, 66, 83, 99] and store.get(job.id).progress == 100

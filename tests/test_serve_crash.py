"""kill -9 a live `vidcore serve` in the middle of a job, start it again on the same store: every job the
server accepted completes, exactly once.

SIGKILL runs no clean-up: the killed server leaves its job in progress in the store, maybe a half-written
temporary video, and the store's lock file. The next server may take the store only because the kernel
dropped the dead one's lock, requeues the job, and runs it again from the start.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")
pytest.importorskip("vidcore_latte")

import serve_live  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
JOBS = 4
SETTINGS = {"steps": 16, "frames": 16}  # a second or two each on one CPU thread


def test_kill_9_mid_job_then_restart_completes_every_accepted_job_exactly_once(tmp_path):
    from vidcore.serve.sqlite import SQLiteStore

    out = tmp_path / "out"
    first = serve_live.start(out)
    try:
        client = first.client()
        ids = [client.videos.create(prompt=f"clip {i}", extra_body={**SETTINGS, "seed": i}).id for i in range(JOBS)]
        serve_live.wait_for(lambda: (v := client.videos.retrieve(ids[0])).status == "in_progress" and v.progress >= 10)
    finally:
        first.kill()
    assert first.proc.returncode == -9

    second = serve_live.start(out)
    try:
        client = second.client()
        done = [serve_live.within(120, client.videos.poll, i, poll_interval_ms=200) for i in ids]
    finally:
        second.stop()
    assert [v.status for v in done] == ["completed"] * JOBS, [v.error for v in done]

    videos = out / "videos"
    assert sorted(p.name for p in videos.iterdir()) == sorted([f"{i}.mp4" for i in ids] + [f"{i}.json" for i in ids])
    for i in ids:
        record = json.loads((videos / f"{i}.json").read_text())
        assert record["complete"] and record["output"] == f"{i}.mp4"
        assert (videos / f"{i}.mp4").stat().st_size > 1000
    store = SQLiteStore(out / "jobs.sqlite3")
    try:
        history = {i: [e["kind"] for e in store.events(i)] for i in ids}
    finally:
        store.close()
    assert all(kinds.count("completed") == 1 for kinds in history.values()), history
    # the job the kill hit was started, taken back by the restart and started again
    assert history[ids[0]] == ["queued", "started", "recovered", "started", "completed"], history[ids[0]]
    assert all(kinds.count("started") == 1 for kinds in list(history.values())[1:]), history


def test_sigterm_mid_job_gives_the_job_back_to_the_queue(tmp_path):
    from vidcore.serve.sqlite import SQLiteStore

    out = tmp_path / "out"
    first = serve_live.start(out)
    client = first.client()
    job = client.videos.create(prompt="interrupted", extra_body={"steps": 1000, "frames": 16}).id
    serve_live.wait_for(lambda: client.videos.retrieve(job).progress > 0)
    first.stop()  # asserts the graceful path ran ("stopped; ...")
    assert "stopped; 1 job(s) wait in the store for the next start" in first.text(), first.text()
    store = SQLiteStore(out / "jobs.sqlite3")
    try:
        back = store.get(job)
        assert (back.status, back.attempts) == ("queued", 1)
        assert [e["kind"] for e in store.events(job)] == ["queued", "started", "requeued"]
    finally:
        store.close()
    assert not list((out / "videos").iterdir())

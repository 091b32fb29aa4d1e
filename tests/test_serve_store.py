"""The job stores, SQLite and PostgreSQL, held to one contract: atomic claims, fencing by attempt, the queue
limit, recovery of a dead server's jobs, paging; then what is SQLite's own (its lock, its file).

Every test taking ``backend`` (or ``store``) runs on both. The PostgreSQL runs need a server: `pg_live`
starts one (they skip without the binaries, and fail under VIDCORE_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pg_live
import pytest

from vidcore.serve.files import new_id
from vidcore.serve.sqlite import SQLiteStore
from vidcore.serve.store import Job, JobStore, QueueFull, StoreError
from vidcore.serve.store_url import open_store


def job(model: str = "m", **kw) -> Job:
    return Job(id=new_id(), model=model, prompt="p", request={"prompt": "p"}, size="64x64", seconds="1",
               created_at=int(time.time()), **kw)


class Backend:
    """One store's database; `open` is one more server on it, `kill` a server dying without a word."""

    name = ""

    def __init__(self) -> None:
        self.opened: list[JobStore] = []

    def open(self, lease_s: float = 30.0) -> JobStore:
        store = self._open(lease_s)
        self.opened.append(store)
        return store

    def _open(self, lease_s: float) -> JobStore:
        raise NotImplementedError

    def kill(self, store: JobStore) -> None:
        raise NotImplementedError

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


class SQLite(Backend):
    name = "sqlite"

    def __init__(self, path):
        super().__init__()
        self.path = path

    def _open(self, lease_s: float) -> JobStore:
        return SQLiteStore(self.path)

    def kill(self, store: JobStore) -> None:
        store.close()  # as the kernel does for a dead process: the lock goes, its jobs stay in progress


class Postgres(Backend):
    name = "postgresql"

    def __init__(self, url: str):
        super().__init__()
        self.url = url

    def _open(self, lease_s: float) -> JobStore:
        from vidcore.serve.postgres import PostgresStore

        return PostgresStore(self.url, lease_s=lease_s)

    def kill(self, store: JobStore) -> None:
        store.close()  # no more renewals: its leases run out
        time.sleep(store.lease_s + 0.3)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    b = SQLite(tmp_path / "jobs.sqlite3") if request.param == "sqlite" else Postgres(pg_live.server().new_database())
    yield b
    b.close_all()


@pytest.fixture
def store(backend):
    return backend.open()


def test_jobs_survive_closing_and_reopening(backend):
    s = backend.open()
    a = s.add(job(), max_queued=10)
    s.close()
    assert backend.open().get(a.id) == a


def test_a_sqlite_store_is_one_sqlite_file(tmp_path):
    SQLiteStore(tmp_path / "j.db").close()
    assert (tmp_path / "j.db").read_bytes()[:16] == b"SQLite format 3\0"


def test_claim_takes_the_oldest_job_of_a_served_model(store):
    a, b, c = store.add(job("x"), max_queued=10), store.add(job("y"), max_queued=10), store.add(job("y"), max_queued=10)
    first = store.claim("w", {"y"})
    assert (first.id, first.status, first.attempts, first.owner) == (b.id, "in_progress", 1, "w")
    assert store.claim("w", {"y"}).id == c.id
    assert store.claim("w", {"y"}) is None and store.claim("w", set()) is None
    assert store.get(a.id).status == "queued"


def test_concurrent_claims_never_share_a_job(backend):
    s = backend.open()
    ids = {s.add(job(), max_queued=1000).id for _ in range(60)}
    got: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        while (j := s.claim(f"w{n}", {"m"})) is not None:
            with lock:
                got.append(j.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(ids)


def test_writes_are_fenced_by_the_attempt(backend):
    first = backend.open(lease_s=2.0)
    a = first.add(job(), max_queued=10)
    claimed = first.claim("w", {"m"})
    assert first.set_progress(a.id, claimed.attempts, 40) and first.get(a.id).progress == 40
    assert first.recover() == []  # a live server's job stays its own
    backend.kill(first)  # the server dies in the middle of the job
    store = backend.open()
    assert store.get(a.id).status == "in_progress"
    assert store.recover() == [a.id]  # ... and the next one gives it back to the queue
    assert store.recover() == []
    again = store.claim("w2", {"m"})
    assert again.attempts == 2
    assert store.recover() == []  # the new attempt is alive
    assert not store.set_progress(a.id, 1, 90)  # the stale attempt writes nothing
    assert not store.finish(a.id, 1)
    assert not store.requeue(a.id, 1)
    assert store.finish(a.id, 2)
    assert not store.finish(a.id, 2)  # completes once
    done = store.get(a.id)
    assert (done.status, done.progress) == ("completed", 100) and done.completed_at
    kinds = [e["kind"] for e in store.events(a.id)]
    assert kinds == ["queued", "started", "recovered", "started", "completed"]


def test_failure_keeps_its_error(store):
    a = store.add(job(), max_queued=10)
    store.claim("w", {"m"})
    assert store.finish(a.id, 1, error={"code": "invalid_request", "message": "one line"})
    got = store.get(a.id)
    assert got.status == "failed" and got.error == {"code": "invalid_request", "message": "one line"}


def test_requeue_keeps_the_jobs_place(store):
    a, b = store.add(job(), max_queued=10), store.add(job(), max_queued=10)
    store.claim("w", {"m"})
    assert store.requeue(a.id, 1)
    assert store.claim("w", {"m"}).id == a.id
    assert store.get(b.id).status == "queued"


def test_the_queue_limit_counts_waiting_jobs_only(store):
    store.add(job(), max_queued=2)
    store.add(job(), max_queued=2)
    with pytest.raises(QueueFull, match=r"^the queue is full \(2 jobs waiting\); retry later$"):
        store.add(job(), max_queued=2)
    store.claim("w", {"m"})
    store.add(job(), max_queued=2)  # a running job does not wait
    assert store.counts() == {"queued": 2, "in_progress": 1, "completed": 0, "failed": 0}


def test_delete_in_any_state(store):
    a, b = store.add(job(), max_queued=10), store.add(job(), max_queued=10)
    store.claim("w", {"m"})
    assert store.delete(a.id).status == "in_progress"
    assert store.delete(b.id).status == "queued"
    assert store.delete(a.id) is None and store.get(a.id) is None
    assert not store.finish(a.id, 1)  # the worker's next write fails: it knows to clean up
    assert store.claim("w", {"m"}) is None


def test_list_pages_in_both_orders(store):
    ids = [store.add(job(), max_queued=100).id for _ in range(5)]
    page, more = store.list(limit=2)
    assert [j.id for j in page] == ids[:-3:-1] and more
    page, more = store.list(after=page[-1].id, limit=2)
    assert [j.id for j in page] == [ids[2], ids[1]] and more
    page, more = store.list(after=page[-1].id, limit=2)
    assert [j.id for j in page] == [ids[0]] and not more
    page, more = store.list(order="asc", after=ids[1], limit=10)
    assert [j.id for j in page] == ids[2:] and not more


def test_a_second_server_process_is_refused_while_the_first_lives(tmp_path):
    path = tmp_path / "j.db"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from vidcore.serve.sqlite import SQLiteStore; "
                               f"s = SQLiteStore({str(path)!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match="in use by another running vidcore serve"):
            SQLiteStore(path)
    finally:
        holder.kill()
        holder.wait()
    SQLiteStore(path).close()  # a killed holder's lock is gone with it


@pytest.mark.parametrize("url, message", [
    ("mysql://x", "is not a store URL vidcore knows"),
    ("mysql://u:p@db/x", "is not a store URL vidcore knows"),
    ("sqlite://jobs.db", "is not a store URL vidcore knows"),
    ("sqlite:///jobs.db?mode=ro", "has query options"),
    ("sqlite:///no/such/folder/j.db", "does not exist; create it first"),
    ("", "--store needs a URL"),
])
def test_store_urls_refused_in_one_line(tmp_path, monkeypatch, url, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError) as info:
        open_store(url, tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "u:p" not in str(info.value)


def test_store_urls_relative_and_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for url, where in (("sqlite:///rel.db", tmp_path / "rel.db"), (f"sqlite:///{tmp_path}/abs.db", tmp_path / "abs.db"),
                       (None, tmp_path / "jobs.sqlite3")):
        s = open_store(url, tmp_path)
        s.close()
        assert where.is_file(), url


def test_a_file_that_is_not_sqlite_is_one_line(tmp_path):
    bad = tmp_path / "j.db"
    bad.write_bytes(b"not a database at all, just text " * 100)
    with pytest.raises(StoreError, match="cannot be opened as SQLite"):
        SQLiteStore(bad)

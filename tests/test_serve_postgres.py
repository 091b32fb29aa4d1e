"""The PostgreSQL job store with several servers on one database: claims that never collide (threads and
processes racing), a queue limit that holds across servers, leases that keep a live server's job its own and
give a killed server's job to another, one-line refusals; then two live `vidcore serve` sharing one queue,
one of them killed with SIGKILL in the middle of a job that the other then completes, exactly once.

A PostgreSQL server comes from `pg_live` (skipped without the binaries; failed under VIDCORE_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pg_live
import pytest

from vidcore.serve.files import new_id
from vidcore.serve.store import Job, QueueFull, StoreError, StoreUnavailable
from vidcore.serve.store_url import open_store


def job(model: str = "m") -> Job:
    return Job(id=new_id(), model=model, prompt="p", request={"prompt": "p"}, size="64x64", seconds="1",
               created_at=int(time.time()))


@pytest.fixture
def pg_url() -> str:
    """A new, empty database on this process's PostgreSQL server."""
    return pg_live.server().new_database()


@pytest.fixture
def stores(pg_url):
    from vidcore.serve.postgres import PostgresStore

    opened = []

    def open_one(**kw) -> PostgresStore:
        s = PostgresStore(pg_url, **kw)
        opened.append(s)
        return s

    yield open_one
    for s in opened:
        s.close()


def test_servers_racing_in_threads_never_share_a_job(stores):
    servers = [stores() for _ in range(3)]
    ids = {servers[0].add(job(), max_queued=1000).id for _ in range(90)}
    got: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(server, name: str) -> None:
        while (j := server.claim(name, {"m"})) is not None:
            with lock:
                got.append((j.id, name))

    threads = [threading.Thread(target=worker, args=(s, f"s{i}w{n}")) for i, s in enumerate(servers) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(i for i, _ in got) == sorted(ids)  # every job once, none twice
    assert all(servers[1].get(i).attempts == 1 for i in ids)
    assert len({w for _, w in got}) > 1


CLAIMER = """
import json, sys, time
from vidcore.serve.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # all start claiming at once
got = []
while (j := store.claim(sys.argv[2], {"m"})) is not None:
    got.append(j.id)
store.close()
print(json.dumps(got), flush=True)
"""


def test_servers_in_separate_processes_never_share_a_job(pg_url, stores):
    ids = {stores().add(job(), max_queued=1000).id for _ in range(120)}
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, pg_url, f"p{n}"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for n in range(3)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        claimed = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    finally:
        for p in procs:
            p.kill()
    every = [i for c in claimed for i in c]
    assert sorted(every) == sorted(ids), (len(every), len(set(every)), len(ids))
    assert sum(1 for c in claimed if c) >= 2, [len(c) for c in claimed]  # they did race


def test_the_queue_limit_holds_across_servers(stores):
    servers = [stores(), stores()]
    taken: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def create(server) -> None:
        for _ in range(6):
            try:
                server.add(job(), max_queued=10)
                outcome = taken
            except QueueFull:
                outcome = refused
            with lock:
                outcome.append("x")

    threads = [threading.Thread(target=create, args=(servers[n % 2],)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(taken), len(refused)) == (10, 26)
    assert servers[0].counts()["queued"] == 10


HOLDER = """
import sys, time
from vidcore.serve.postgres import PostgresStore
store = PostgresStore(sys.argv[1], lease_s=float(sys.argv[2]))
job = store.claim("doomed:0", {"m"})
print(job.id, flush=True)
time.sleep(600)
"""


def test_a_live_server_keeps_its_job_and_a_killed_ones_job_runs_on_another(pg_url, stores):
    lease = 2.0  # renewed every 0.67 s: a loaded CI machine stalls the holder less than that
    other = stores(lease_s=lease)
    a = other.add(job(), max_queued=10)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, pg_url, str(lease)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == a.id
        deadline = time.time() + 2 * lease
        while time.time() < deadline:  # two leases long, renewed by the holder's heartbeat
            assert other.recover() == [], "a live server's job was taken from it"
            time.sleep(0.1)
        assert other.get(a.id).owner == "doomed:0"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    killed = time.time()
    while not (recovered := other.recover()):
        assert time.time() - killed < lease + 5, "the killed server's job was never requeued"
        time.sleep(0.05)
    assert recovered == [a.id] and time.time() - killed >= lease * 0.5
    again = other.claim("survivor:0", {"m"})
    assert (again.id, again.attempts) == (a.id, 2)
    assert not other.finish(a.id, 1)  # were the dead one to come back, its writes are refused
    assert other.finish(a.id, 2)
    assert [e["kind"] for e in other.events(a.id)] == ["queued", "started", "recovered", "started", "completed"]


def test_a_finished_or_requeued_job_holds_no_lease(stores):
    s = stores(lease_s=1.0)
    a, b = s.add(job(), max_queued=10), s.add(job(), max_queued=10)
    s.claim("w", {"m"})
    s.claim("w", {"m"})
    assert s.finish(a.id, 1) and s.requeue(b.id, 1)
    s.close()
    time.sleep(1.3)
    assert stores().recover() == []


def test_refusals_are_one_line_without_the_password(pg_url, stores, tmp_path):
    from vidcore.serve.postgres import META, PostgresStore

    for url, message in [
        ("postgresql://u:secret@127.0.0.1:1/jobs", "cannot use job store 'postgresql://u:***@127.0.0.1:1/jobs' ("),
        (f"{pg_url}?lease=0", "--store lease='0' is not a number of seconds from 0.5 to 3600"),
        (f"{pg_url}?lease=soon", "--store lease='soon' is not a number"),
        (f"{pg_url}?bogus=1&password=secret", "invalid URI query parameter"),
    ]:
        with pytest.raises(StoreError) as info:
            open_store(url, tmp_path)
        text = str(info.value)
        assert message in text and "\n" not in text and "secret" not in text, text
    with_lease = open_store(f"{pg_url}?lease=2.5", tmp_path)
    try:
        assert with_lease.lease_s == 2.5 and with_lease.recover_interval == 1.25
    finally:
        with_lease.close()
    assert stores().lease_s == 30.0
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(f"UPDATE {META} SET value = '99' WHERE key = 'schema'")
    with pytest.raises(StoreError, match="has schema version 99; this vidcore reads 1; use another --store$"):
        PostgresStore(pg_url)


def test_a_database_that_went_away_is_store_unavailable(pg_url, stores):
    import psycopg

    s = stores(connect_timeout=2.0)
    a = s.add(job(), max_queued=10)
    assert s.get(a.id) is not None
    name = pg_url.rpartition("/")[2]
    with psycopg.connect(pg_live.server().url(), autocommit=True) as db:
        db.execute(f"DROP DATABASE {name} WITH (FORCE)")
    for _ in range(2):  # the broken connection, then a new one that cannot be made
        with pytest.raises(StoreUnavailable, match=r"^the job store .* cannot be reached \(.*\); retry later$"):
            s.get(a.id)


# -- two live servers on one queue ------------------------------------------------------------------
SETTINGS = {"steps": 16, "frames": 16}


def test_two_servers_share_one_queue_and_a_killed_ones_job_completes_on_the_other(pg_url, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("openai")
    pytest.importorskip("vidcore_latte")
    import warnings

    import serve_live

    from vidcore.serve.postgres import PostgresStore

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    out = tmp_path / "shared-out"  # one --out for both, as a network file system gives several hosts
    store = f"{pg_url}?lease=4"  # long enough that a loaded machine never stalls the live server past it
    first = serve_live.start(out, "--store", store)
    second = serve_live.start(out, "--store", store)
    check = PostgresStore(pg_url)
    try:
        ids = [first.client().videos.create(prompt=f"clip {i}", extra_body={**SETTINGS, "seed": i}).id
               for i in range(4)]

        def held_by_first():
            return next((j for i in ids if (j := check.get(i)).status == "in_progress" and j.progress > 0
                         and f":{first.proc.pid}:" in j.owner), None)

        doomed = serve_live.wait_for(held_by_first, timeout=120).id
        first.kill()
        client = second.client()
        done = [serve_live.within(120, client.videos.poll, i, poll_interval_ms=200) for i in ids]
        assert [v.status for v in done] == ["completed"] * 4, [v.error for v in done]
        assert client.videos.download_content(doomed).content[4:8] == b"ftyp"
        assert {v.id for v in client.videos.list()} == set(ids)
        history = {i: [e["kind"] for e in check.events(i)] for i in ids}
    finally:
        check.close()
        if first.proc.poll() is None:
            first.kill()
        second.stop()
    assert history[doomed] == ["queued", "started", "recovered", "started", "completed"], history
    assert all(kinds.count("completed") == 1 for kinds in history.values()), history
    assert sorted(p.name for p in (out / "videos").iterdir()) == sorted(f"{i}.{ext}" for i in ids
                                                                      for ext in ("mp4", "json"))

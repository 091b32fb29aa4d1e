"""The shared job store: one PostgreSQL database, any number of servers on any number of hosts.

``--store postgresql://user@host:port/database`` (libpq's URL and options;
``?lease=SECONDS`` is ours, 30 by default). Needs the ``postgres`` extra
(psycopg 3 and its pool).

Claims take the oldest queued job with ``SELECT ... FOR UPDATE SKIP LOCKED``
inside the claiming ``UPDATE``, so servers racing for the queue never wait on
each other and never take the same job. Every later write is fenced by the
attempt, as in SQLite. The queue limit is checked under a row lock that every
`add` takes, so concurrent creates on several servers cannot overfill it.

**A dead server's jobs.** A claim is a lease: the job records which server
holds it (``holder``) and until when (``lease_until``, read on the database's
clock, so the hosts' clocks do not matter). A thread of each store renews the
leases of its server's jobs every third of the lease. A server that dies, hangs
or loses the database stops renewing; once a lease has run out, `recover`
(which every server calls every half lease) puts the job back in the queue and
any server may run it again; the old holder's writes are refused by the fence
if it comes back. Leases rather than session advisory locks: a lock lives as
long as the database keeps the dead server's connection, which after a host
crash or a network cut is until TCP keepalive gives up (hours by default), and
it does not survive a transaction-pooling proxy; a lease bounds the wait by
its length whatever happened to the server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Collection, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .store import ROW_FIELDS, STATES, Job, JobStore, QueueFull, StoreError, StoreUnavailable, redact

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
DEFAULT_LEASE_S = 30.0
JOBS, EVENTS, META = "vidcore_jobs", "vidcore_events", "vidcore_meta"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {JOBS} (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    request TEXT NOT NULL,
    size TEXT NOT NULL,
    seconds TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({", ".join(f"'{s}'" for s in STATES)})),
    progress INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at BIGINT,
    completed_at BIGINT,
    error TEXT,
    owner TEXT,
    holder TEXT,
    lease_until TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS {JOBS}_status ON {JOBS} (status, seq);
CREATE INDEX IF NOT EXISTS {JOBS}_leases ON {JOBS} (lease_until) WHERE status = 'in_progress';
CREATE TABLE IF NOT EXISTS {EVENTS} (
    n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    attempt INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS {EVENTS}_job ON {EVENTS} (job_id, n);
INSERT INTO {META} (key, value) VALUES ('queue', '') ON CONFLICT DO NOTHING;
"""
_COLUMNS = ", ".join(ROW_FIELDS)
_NOW = "extract(epoch FROM clock_timestamp())"
#: any constant: the advisory lock that keeps two servers from creating the tables at the same moment
_SCHEMA_LOCK = 0x76696463  # "vidc"


def split_url(url: str) -> tuple[str, float]:
    """The libpq URL without our ``lease`` option, and the lease in seconds."""
    parts = urlsplit(url)
    options = parse_qsl(parts.query, keep_blank_values=True)
    lease = DEFAULT_LEASE_S
    for key, value in options:
        if key == "lease":
            try:
                lease = float(value)
            except ValueError:
                lease = -1.0
            if not 0.5 <= lease <= 3600:
                raise StoreError(f"--store lease={value[:20]!r} is not a number of seconds from 0.5 to 3600")
    rest = urlencode([(k, v) for k, v in options if k != "lease"])
    return urlunsplit(parts._replace(query=rest)), lease


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


class PostgresStore(JobStore):
    def __init__(self, url: str, *, lease_s: float | None = None, pool_size: int = 8, connect_timeout: float = 10.0):
        try:
            import psycopg
            import psycopg_pool
            from psycopg.rows import dict_row
        except ImportError:
            raise StoreError("PostgreSQL job stores need psycopg; install the extra: pip install "
                             "'vidcore[serve,postgres]'") from None
        self._psycopg, self._pool_errors = psycopg, (psycopg.OperationalError, psycopg_pool.PoolTimeout)
        self.shown = redact(url)
        conninfo, lease = split_url(url)
        self.lease_s = float(lease_s if lease_s is not None else lease)
        self.recover_interval = self.lease_s / 2
        #: this store's name in the leases it holds: one per open store, so a restarted server is a new holder
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        try:
            with psycopg.connect(conninfo, connect_timeout=int(connect_timeout), autocommit=True) as db:
                self._create_schema(db)
        except psycopg.Error as exc:
            raise StoreError(f"cannot use job store {self.shown!r} ({redact(_first_line(exc))})") from None
        self._pool = psycopg_pool.ConnectionPool(conninfo, min_size=1, max_size=pool_size, open=False,
                                                 kwargs={"row_factory": dict_row, "connect_timeout":
                                                         int(connect_timeout)},
                                                 timeout=connect_timeout, name="vidcore-store")
        self._pool.open(wait=False)
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_leases, name="vidcore-store-leases", daemon=True)
        self._renewer.start()

    def _create_schema(self, db: Any) -> None:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            db.execute(SCHEMA)
            row = db.execute(f"SELECT value FROM {META} WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute(f"INSERT INTO {META} (key, value) VALUES ('schema', %s)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise StoreError(f"job store {self.shown!r} has schema version {row[0]}; this vidcore reads "
                                 f"{SCHEMA_VERSION}; use another --store")

    # -- connections ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        """One transaction on a pooled connection; the database being away is `StoreUnavailable`."""
        try:
            with self._pool.connection() as db, db.transaction():
                yield db
        except self._pool_errors as exc:
            raise StoreUnavailable(f"the job store {self.shown!r} cannot be reached ({redact(_first_line(exc))}); "
                                   "retry later") from None

    @staticmethod
    def _event(db: Any, job_id: str, kind: str, attempt: int) -> None:
        db.execute(f"INSERT INTO {EVENTS} (job_id, at, kind, attempt) VALUES (%s, {_NOW}, %s, %s)",
                   (job_id, kind, attempt))

    def _renew_leases(self) -> None:
        every = self.lease_s / 3
        while not self._stop.wait(every):
            try:
                with self._tx() as db:
                    db.execute(f"UPDATE {JOBS} SET lease_until = clock_timestamp() + %s * interval '1 second' "
                               "WHERE holder = %s AND status = 'in_progress'", (self.lease_s, self.holder))
            except StoreUnavailable as exc:
                log.warning("cannot renew the leases of this server's jobs: %s", exc)
            except Exception:  # noqa: BLE001 - the thread must outlive any one failure
                log.exception("renewing the leases of this server's jobs failed")

    # -- the interface ----------------------------------------------------------------------------
    def add(self, job: Job, *, max_queued: int) -> Job:
        row = job.to_row()
        with self._tx() as db:
            db.execute(f"SELECT value FROM {META} WHERE key = 'queue' FOR UPDATE")  # one add at a time
            queued = db.execute(f"SELECT COUNT(*) AS n FROM {JOBS} WHERE status = 'queued'").fetchone()["n"]
            if queued >= max_queued:
                raise QueueFull(f"the queue is full ({queued} jobs waiting); retry later")
            db.execute(f"INSERT INTO {JOBS} ({_COLUMNS}) VALUES ({', '.join(['%s'] * len(ROW_FIELDS))})",
                       [row[k] for k in ROW_FIELDS])
            self._event(db, job.id, "queued", 0)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._tx() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM {JOBS} WHERE id = %s", (job_id,)).fetchone()
        return None if row is None else Job.from_row(row)

    def list(self, *, after: str | None = None, limit: int = 20, order: str = "desc") -> tuple[list[Job], bool]:
        op, direction = (">", "ASC") if order == "asc" else ("<", "DESC")
        where, args = "", []
        if after is not None:
            where, args = f"WHERE seq {op} (SELECT seq FROM {JOBS} WHERE id = %s)", [after]
        with self._tx() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM {JOBS} {where} ORDER BY seq {direction} LIMIT %s",
                              [*args, limit + 1]).fetchall()
        return [Job.from_row(r) for r in rows[:limit]], len(rows) > limit

    def claim(self, owner: str, models: Collection[str]) -> Job | None:
        names = sorted(models)
        if not names:
            return None
        with self._tx() as db:
            row = db.execute(
                f"UPDATE {JOBS} SET status = 'in_progress', attempts = attempts + 1, owner = %s, started_at = %s, "
                "progress = 0, holder = %s, lease_until = clock_timestamp() + %s * interval '1 second' "
                f"WHERE id = (SELECT id FROM {JOBS} WHERE status = 'queued' AND model = ANY(%s) ORDER BY seq "
                f"LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}",
                (owner, int(time.time()), self.holder, self.lease_s, names)).fetchone()
            if row is None:
                return None
            job = Job.from_row(row)
            self._event(db, job.id, "started", job.attempts)
        return job

    def _update_attempt(self, job_id: str, attempt: int, sets: str, args: list[Any], kind: str | None) -> bool:
        with self._tx() as db:
            cur = db.execute(f"UPDATE {JOBS} SET {sets} WHERE id = %s AND status = 'in_progress' AND attempts = %s",
                             [*args, job_id, attempt])
            done = bool(cur.rowcount)
            if done and kind is not None:
                self._event(db, job_id, kind, attempt)
        return done

    def set_progress(self, job_id: str, attempt: int, progress: int) -> bool:
        return self._update_attempt(job_id, attempt, "progress = %s", [int(progress)], None)

    def finish(self, job_id: str, attempt: int, *, error: dict[str, str] | None = None) -> bool:
        ended = "holder = NULL, lease_until = NULL, completed_at = %s"
        if error is None:
            return self._update_attempt(job_id, attempt, f"status = 'completed', progress = 100, {ended}",
                                        [int(time.time())], "completed")
        return self._update_attempt(job_id, attempt, f"status = 'failed', error = %s, {ended}",
                                    [json.dumps(error), int(time.time())], "failed")

    def requeue(self, job_id: str, attempt: int) -> bool:
        return self._update_attempt(job_id, attempt, "status = 'queued', owner = NULL, progress = 0, holder = NULL, "
                                    "lease_until = NULL", [], "requeued")

    def delete(self, job_id: str) -> Job | None:
        with self._tx() as db:
            row = db.execute(f"DELETE FROM {JOBS} WHERE id = %s RETURNING {_COLUMNS}", (job_id,)).fetchone()
            if row is None:
                return None
            job = Job.from_row(row)
            self._event(db, job_id, "deleted", job.attempts)
        return job

    def counts(self) -> dict[str, int]:
        with self._tx() as db:
            rows = db.execute(f"SELECT status, COUNT(*) AS n FROM {JOBS} GROUP BY status").fetchall()
        return {**dict.fromkeys(STATES, 0), **{r["status"]: r["n"] for r in rows}}

    def recover(self) -> list[str]:
        # a lease that ran out is a server that is gone (or cut off: its writes are fenced from now on); rows
        # another server is recovering or finishing right now are locked, and skipped
        with self._tx() as db:
            rows = db.execute(
                f"UPDATE {JOBS} SET status = 'queued', owner = NULL, progress = 0, holder = NULL, lease_until = NULL "
                f"WHERE id IN (SELECT id FROM {JOBS} WHERE status = 'in_progress' AND lease_until < clock_timestamp() "
                "FOR UPDATE SKIP LOCKED) RETURNING id, attempts, seq").fetchall()
            rows.sort(key=lambda r: r["seq"])
            for r in rows:
                self._event(db, r["id"], "recovered", r["attempts"])
        return [r["id"] for r in rows]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        with self._tx() as db:
            rows = db.execute(f"SELECT at, kind, attempt FROM {EVENTS} WHERE job_id = %s ORDER BY n",
                              (job_id,)).fetchall()
        return [dict(r) for r in rows]

    def close(self) -> None:
        """Stop renewing leases and close the connections; jobs still held are recovered once their leases run out."""
        self._stop.set()
        if self._renewer.is_alive() and self._renewer is not threading.current_thread():
            self._renewer.join(10)
        self._pool.close()

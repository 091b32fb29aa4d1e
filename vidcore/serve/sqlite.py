"""The default job store: one SQLite file in WAL mode, served by one server at a time.

Every write is its own ``BEGIN IMMEDIATE`` transaction with ``synchronous=FULL``,
so a job `add` returned survives a kill -9 and a power cut, and a claim is
atomic between the server's threads. The server holds the file's claim
(`vidcore.fileio.claim`, an ``flock`` the kernel drops when the process dies)
for as long as the store is open, so a second server on the same file is
refused, and any job in progress that this store did not hand out belonged to
a server that is gone: `recover` requeues it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from ..errors import OutputBusyError
from ..fileio import claim
from .store import ROW_FIELDS, STATES, Job, JobStore, QueueFull, StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    request TEXT NOT NULL,
    size TEXT NOT NULL,
    seconds TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at INTEGER,
    completed_at INTEGER,
    error TEXT,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS events (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    attempt INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, n);
"""
SCHEMA_VERSION = 1
_COLUMNS = ", ".join(ROW_FIELDS)


class SQLiteStore(JobStore):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise StoreError(f"the folder of job store {str(self.path)!r} does not exist; create it first")
        if self.path.is_dir():
            raise StoreError(f"job store {str(self.path)!r} is a folder; give a file, e.g. sqlite:///jobs.sqlite3")
        self._hold = contextlib.ExitStack()
        try:
            self._hold.enter_context(claim(self.path, wait=0.0))
        except OutputBusyError:
            raise StoreError(f"job store {str(self.path)!r} is in use by another running vidcore serve; stop it or "
                             "use another --store (one SQLite store serves one server)") from None
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        #: (id, attempt) of the claims this store handed out: its own server's, alive
        self._claimed: set[tuple[str, int]] = set()
        try:
            db = self._db()
            db.executescript(SCHEMA)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(f"job store {str(self.path)!r} has schema version {version}; this vidcore reads "
                                 f"{SCHEMA_VERSION}; use another --store")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"job store {str(self.path)!r} cannot be opened as SQLite ({exc}); it is damaged or "
                             "another kind of file; use another --store") from None
        except BaseException:
            self.close()
            raise

    # -- connections ------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _event(db: sqlite3.Connection, job_id: str, kind: str, attempt: int) -> None:
        db.execute("INSERT INTO events (job_id, at, kind, attempt) VALUES (?, ?, ?, ?)",
                   (job_id, time.time(), kind, attempt))

    # -- the interface ----------------------------------------------------------------------------
    def add(self, job: Job, *, max_queued: int) -> Job:
        row = job.to_row()
        with self._write() as db:
            queued = db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
            if queued >= max_queued:
                raise QueueFull(f"the queue is full ({queued} jobs waiting); retry later")
            db.execute(f"INSERT INTO jobs ({_COLUMNS}) VALUES ({', '.join('?' * len(ROW_FIELDS))})",
                       [row[k] for k in ROW_FIELDS])
            self._event(db, job.id, "queued", 0)
        return job

    def get(self, job_id: str) -> Job | None:
        row = self._db().execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else Job.from_row(row)

    def list(self, *, after: str | None = None, limit: int = 20, order: str = "desc") -> tuple[list[Job], bool]:
        db = self._db()
        op, direction = (">", "ASC") if order == "asc" else ("<", "DESC")
        where, args = "", []
        if after is not None:
            where, args = f"WHERE seq {op} (SELECT seq FROM jobs WHERE id = ?)", [after]
        rows = db.execute(f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY seq {direction} LIMIT ?",
                          [*args, limit + 1]).fetchall()
        return [Job.from_row(r) for r in rows[:limit]], len(rows) > limit

    def claim(self, owner: str, models: Collection[str]) -> Job | None:
        names = sorted(models)
        if not names:
            return None
        with self._write() as db:
            row = db.execute(f"SELECT id FROM jobs WHERE status = 'queued' AND model IN ({', '.join('?' * len(names))})"
                             " ORDER BY seq LIMIT 1", names).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'in_progress', attempts = attempts + 1, owner = ?, started_at = ?, "
                       "progress = 0 WHERE id = ?", (owner, int(time.time()), row["id"]))
            job = Job.from_row(db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (row["id"],)).fetchone())
            self._event(db, job.id, "started", job.attempts)
        with self._lock:
            self._claimed.add((job.id, job.attempts))
        return job

    def _update_attempt(self, job_id: str, attempt: int, sets: str, args: list[Any], kind: str | None) -> bool:
        with self._write() as db:
            cur = db.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND status = 'in_progress' AND attempts = ?",
                             [*args, job_id, attempt])
            if cur.rowcount and kind is not None:
                self._event(db, job_id, kind, attempt)
        return bool(cur.rowcount)

    def set_progress(self, job_id: str, attempt: int, progress: int) -> bool:
        return self._update_attempt(job_id, attempt, "progress = ?", [int(progress)], None)

    def finish(self, job_id: str, attempt: int, *, error: dict[str, str] | None = None) -> bool:
        if error is None:
            return self._update_attempt(job_id, attempt, "status = 'completed', progress = 100, completed_at = ?",
                                        [int(time.time())], "completed")
        return self._update_attempt(job_id, attempt, "status = 'failed', error = ?, completed_at = ?",
                                    [json.dumps(error), int(time.time())], "failed")

    def requeue(self, job_id: str, attempt: int) -> bool:
        return self._update_attempt(job_id, attempt, "status = 'queued', owner = NULL, progress = 0", [], "requeued")

    def delete(self, job_id: str) -> Job | None:
        with self._write() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            job = Job.from_row(row)
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            self._event(db, job_id, "deleted", job.attempts)
        return job

    def counts(self) -> dict[str, int]:
        rows = self._db().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {**dict.fromkeys(STATES, 0), **{r[0]: r[1] for r in rows}}

    def recover(self) -> list[str]:
        # we hold the file's claim, so no other live server writes here: a job in progress that we did not
        # hand out is orphaned
        with self._lock:
            ours = set(self._claimed)
        with self._write() as db:
            rows = [r for r in db.execute("SELECT id, attempts FROM jobs WHERE status = 'in_progress' ORDER BY seq")
                    if (r["id"], r["attempts"]) not in ours]
            for r in rows:
                db.execute("UPDATE jobs SET status = 'queued', owner = NULL, progress = 0 WHERE id = ?", (r["id"],))
                self._event(db, r["id"], "recovered", r["attempts"])
        return [r["id"] for r in rows]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT at, kind, attempt FROM events WHERE job_id = ? ORDER BY n",
                                  (job_id,)).fetchall()
        return [dict(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            self._all.clear()
        self._local = threading.local()
        self._hold.close()

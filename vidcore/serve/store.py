"""The job store: where accepted jobs live until they are done, behind one small interface.

A job moves ``queued -> in_progress -> completed | failed``; a worker takes one
with `JobStore.claim`, which is atomic across threads and processes and bumps
the job's ``attempts``. Every later write of that worker names the attempt it
holds (a fencing token), so a worker whose job was taken back (its server died
and `JobStore.recover` requeued it) can no longer change it. Deleting a job
removes its row whatever its state; the worker running it notices at its next
write, which fails.

A worker's claim lasts as long as its server lives. How a store tells a dead
server's jobs from a live one's is its own business: the SQLite store is held
by one server (an ``flock``), so what was in progress when it opened is
orphaned; the PostgreSQL store, shared by several servers, gives each claim a
lease its server renews, and a job whose lease ran out is orphaned.
`JobStore.recover` requeues orphaned jobs and is safe to call at any time; a
store with a ``recover_interval`` wants the server to call it that often.

Implementations: `vidcore.serve.sqlite.SQLiteStore` (one file, one server) and
`vidcore.serve.postgres.PostgresStore` (one database, several servers on
several hosts; claims with ``SELECT ... FOR UPDATE SKIP LOCKED``);
`vidcore.serve.store_url.open_store` opens the one a ``--store`` URL names.
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import VidcoreError

STATES = ("queued", "in_progress", "completed", "failed")


class QueueFull(VidcoreError):
    """The store holds as many queued jobs as it may; the client should retry later (HTTP 429)."""


class StoreError(VidcoreError):
    """A store URL that cannot be used, or a store another server holds."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now (a database restarting, the network); retry later (HTTP 503)."""


@dataclass
class Job:
    """One video job as the store keeps it; ``request`` is a `vidcore.request.Request` as a dict."""

    id: str
    model: str
    prompt: str
    request: dict[str, Any]
    size: str
    seconds: str
    created_at: int
    status: str = "queued"
    progress: int = 0
    attempts: int = 0
    started_at: int | None = None
    completed_at: int | None = None
    error: dict[str, str] | None = None
    owner: str | None = None

    def to_row(self) -> dict[str, Any]:
        row = {k: getattr(self, k) for k in ROW_FIELDS}
        row["request"] = json.dumps(self.request)
        row["error"] = None if self.error is None else json.dumps(self.error)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        data = {k: row[k] for k in ROW_FIELDS}
        data["request"] = json.loads(row["request"])
        data["error"] = None if row["error"] is None else json.loads(row["error"])
        return cls(**data)


ROW_FIELDS = ("id", "model", "prompt", "request", "size", "seconds", "created_at", "status", "progress", "attempts",
              "started_at", "completed_at", "error", "owner")


class JobStore(abc.ABC):
    """Durable jobs: a job `add` returned is never lost, and each runs to completion at most once."""

    #: seconds between the server's calls of `recover` while it runs; None: only at start
    recover_interval: float | None = None

    @abc.abstractmethod
    def add(self, job: Job, *, max_queued: int) -> Job:
        """Store a new queued job, or raise `QueueFull` when ``max_queued`` jobs already wait (checked atomically)."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    @abc.abstractmethod
    def list(self, *, after: str | None = None, limit: int = 20, order: str = "desc") -> tuple[list[Job], bool]:
        """A page of jobs in creation order (``asc`` or ``desc``) after the job ``after``, and whether more follow."""

    @abc.abstractmethod
    def claim(self, owner: str, models: Collection[str]) -> Job | None:
        """Atomically move the oldest queued job for one of ``models`` to in_progress for ``owner``; None if none."""

    @abc.abstractmethod
    def set_progress(self, job_id: str, attempt: int, progress: int) -> bool:
        """Record progress (0-100) of the attempt a worker holds; False when the job is no longer that attempt's."""

    @abc.abstractmethod
    def finish(self, job_id: str, attempt: int, *, error: dict[str, str] | None = None) -> bool:
        """Mark the attempt completed (no ``error``) or failed; False when the job is no longer that attempt's."""

    @abc.abstractmethod
    def requeue(self, job_id: str, attempt: int) -> bool:
        """Give an unfinished attempt back to the queue (a worker shutting down); it keeps its place."""

    @abc.abstractmethod
    def delete(self, job_id: str) -> Job | None:
        """Remove a job in any state; returns it as it was, or None if there was none."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """How many jobs are in each of `STATES`."""

    @abc.abstractmethod
    def recover(self) -> list[str]:
        """Requeue the in_progress jobs whose servers are gone (crashed, killed); returns their ids.

        Never touches a job a live server runs, so it may be called at any time.
        """

    @abc.abstractmethod
    def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's history, oldest first: ``{"at", "kind", "attempt"}`` (queued, started, completed, ...)."""

    @abc.abstractmethod
    def close(self) -> None: ...


def redact(url: str) -> str:
    """``url`` without the password it may carry (``scheme://user:***@host``, ``password=***``), for messages."""
    url = re.sub(r"(?i)(\bpassword=)[^&\s]*", r"\1***", url)
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    if not sep or "@" not in authority:
        return url
    credentials, _, host = authority.rpartition("@")
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}{slash}{tail}"

"""Which job store a ``--store`` URL names: `open_store`.

Apart from `vidcore.serve.store` (the interface) so that the implementations,
which import the interface, are imported by neither it nor each other.
"""

from __future__ import annotations

from pathlib import Path

from .store import JobStore, StoreError, redact


def open_store(url: str | None, out: Path) -> JobStore:
    """The store a ``--store`` URL names; the default is a SQLite file under ``out``.

    ``sqlite:///relative.db``, ``sqlite:////absolute.db``, or
    ``postgresql://user@host:port/db`` (libpq's URL, its options included).
    Raises `StoreError` in one line for URLs that cannot be used.
    """
    from .sqlite import SQLiteStore

    if url is None:
        return SQLiteStore(out / "jobs.sqlite3")
    if not isinstance(url, str) or not url.strip():
        raise StoreError("--store needs a URL, e.g. sqlite:///jobs.sqlite3 or postgresql://user@host/db")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres") and sep:
        from .postgres import PostgresStore

        return PostgresStore(url)
    if scheme != "sqlite" or not sep or not rest.startswith("/") or rest == "/":
        raise StoreError(f"--store {redact(url)[:80]!r} is not a store URL vidcore knows; use sqlite:///relative/"
                         "path.db, sqlite:////absolute/path.db or postgresql://user@host:port/database")
    path = Path(rest[1:])
    if "?" in rest or "#" in rest:
        raise StoreError(f"--store {url[:80]!r} has query options; give only the file, e.g. sqlite:///jobs.sqlite3")
    return SQLiteStore(path)

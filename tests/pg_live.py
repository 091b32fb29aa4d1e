"""A throwaway PostgreSQL server on loopback for the store tests: one per test process, a database per test.

`server()` starts it on first use (``initdb`` into a temporary folder, then
``pg_ctl start`` on 127.0.0.1 and a free port, its socket in that folder) and
stops it when the process exits. PostgreSQL refuses to run as root, so as
root it runs as the ``postgres`` user (which Debian's package creates), else
as ``nobody``. ``VIDCORE_TEST_POSTGRES_URL`` names a server to use instead
(a role that may create databases).

Without the binaries (or psycopg) the tests skip, with the reason; with
``VIDCORE_REQUIRE_POSTGRES=1`` (CI sets it) they fail instead, so CI cannot
pass by skipping them.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE = "VIDCORE_REQUIRE_POSTGRES"
URL_ENV = "VIDCORE_TEST_POSTGRES_URL"
TOOLS = ("initdb", "pg_ctl", "postgres")


def unavailable(reason: str) -> None:
    """Skip the test, or fail it when PostgreSQL is required (CI)."""
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason}, and {REQUIRE}=1 says these tests must run", pytrace=False)
    pytest.skip(reason)


def bin_dir() -> Path | None:
    """Where initdb, pg_ctl and postgres are: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    found = [shutil.which(t) for t in TOOLS]
    if all(found):
        return Path(found[0]).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                        if Path(p).parent.name.isdigit() else 0, reverse=True)
    for folder in candidates:
        if all((Path(folder) / t).is_file() for t in TOOLS):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    base_url: str  # ends in "/" : a database name follows
    folder: Path | None = None
    bin: Path | None = None
    run_as: str | None = None

    def url(self, database: str = "postgres") -> str:
        return f"{self.base_url}{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database on this server."""
        import psycopg

        name = f"vidcore_test_{secrets.token_hex(6)}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def _run(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120, **kw)

    def stop(self) -> None:
        if self.folder is None:
            return
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None


def _start(tools: Path) -> PgServer | str:
    """A started server, or why there is none."""
    run_as = None
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            try:
                pwd.getpwnam(name)
            except KeyError:
                continue
            run_as = name
            break
        else:
            return "PostgreSQL cannot run as root and there is no postgres (or nobody) user to run it as"
    folder = Path(tempfile.mkdtemp(prefix="vidcore-pg-"))
    if run_as:
        info = pwd.getpwnam(run_as)
        os.chown(folder, info.pw_uid, info.pw_gid)
    server = PgServer("", folder, tools, run_as)
    init = server._run(str(tools / "initdb"), "-D", str(folder / "data"), "-U", "vidcore", "--auth=trust",
                       "-E", "UTF8", "--no-sync", "--no-instructions")
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        return f"initdb failed: {init.stderr.strip()[-500:]}"
    for _ in range(3):
        port = _free_port()
        options = (f"-k {folder} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=300")
        started = server._run(str(tools / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "log"), "-w",
                              "-t", "60", "-o", options, "start")
        if started.returncode == 0:
            server.base_url = f"postgresql://vidcore@127.0.0.1:{port}/"
            return server
    log = (folder / "log").read_text(errors="replace")[-800:] if (folder / "log").exists() else ""
    shutil.rmtree(folder, ignore_errors=True)
    return f"PostgreSQL did not start: {started.stderr.strip()[-300:]} {log}"


_SERVER: PgServer | str | None = None  # the server, or why there is none


def server() -> PgServer:
    """This process's PostgreSQL server, started on first use (or skip/fail when there is none)."""
    global _SERVER
    if isinstance(_SERVER, str):
        unavailable(_SERVER)
    if _SERVER is not None:
        return _SERVER
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install 'vidcore[postgres]')")
    if os.environ.get(URL_ENV):
        base = os.environ[URL_ENV].rstrip("/").rpartition("/")[0] + "/"
        _SERVER = PgServer(base)
        return _SERVER
    tools = bin_dir()
    if tools is None:
        unavailable("PostgreSQL's server binaries (initdb, pg_ctl, postgres) are not installed "
                    "(apt-get install postgresql)")
    _SERVER = _start(tools)
    if isinstance(_SERVER, str):
        unavailable(_SERVER)
    atexit.register(_SERVER.stop)
    return _SERVER


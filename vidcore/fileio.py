"""Outputs: one writer per output, atomic writes, and the checks that go before any work.

Claims. An output (a video and the files beside it: its run record, its error
file) is written by one process at a time. `claim` takes a non-blocking
exclusive ``flock`` on a hidden lock file beside it, ``.NAME.vidcore-lock``,
and refuses with `OutputBusyError` (naming the holder's pid) when another
process holds it. The kernel drops the lock when its process ends, however it
ends, so a lock nobody holds means its writer is dead. Claims are re-entrant
within a process, so a caller may hold one around work that claims again.

Temporary files. Every file is written to a temporary file in its folder whose
name ties it to its claim, ``.NAME.vidcore-part<TAIL>`` (for ``clip.mp4``:
``.clip.mp4.vidcore-part.mp4``, and ``.clip.mp4.vidcore-part.json`` for its
record), and moved into place whole. A killed write leaves that file and the
lock file behind; whoever next takes the claim removes them, and `sweep`
removes the debris of every free claim in a folder. Nothing that is not ours by
name, and nothing of a claim another live process holds, is ever touched.
Names containing ``.vidcore-`` are reserved for these files.

Without ``overwrite`` the final step is a hard link, which fails if the name
was taken meanwhile, so an existing file is never replaced silently.

Limits: ``flock`` is advisory (other programs ignore it) and on network file
systems is only as good as their lock support; a folder shared by several
hosts needs one whose locks span hosts (NFSv4, Lustre with flock enabled).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidRequestError, OutputBusyError, OutputError

LOCK_SUFFIX = ".vidcore-lock"
PART_MARK = ".vidcore-part"
RESERVED = ".vidcore-"
#: what the longest temporary name adds to an output's name: ``.`` + ``.vidcore-part`` + ``.error.json``
NAME_OVERHEAD = 1 + len(PART_MARK) + len(".error.json")

_HINTS = {
    errno.ENOSPC: "free some disk space and run again",
    errno.EDQUOT: "free some disk space (quota) and run again",
    errno.EROFS: "the disk is read-only; choose another --out",
    errno.EACCES: "check the folder's permissions or choose another --out",
    errno.EPERM: "check the folder's permissions or choose another --out",
    errno.EIO: "the disk reported an I/O error; check it and run again",
    errno.ENAMETOOLONG: "choose a shorter name",
}


def _hint(exc: OSError) -> str:
    return _HINTS.get(exc.errno or 0, "check the path and run again")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def name_max(folder: str | Path) -> int:
    """The longest file name (in bytes) ``folder``'s file system allows; 255 when it cannot say."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def check_name(name: str, folder: str | Path, *, what: str = "output name", extra: int = 0) -> None:
    """Refuse a file name vidcore could not write whole in ``folder``: reserved, or too long with our suffixes.

    ``extra`` counts bytes the caller adds to ``name`` (``.mp4`` for a batch job's name).
    """
    if RESERVED in name:
        raise InvalidRequestError(f"{what} {name!r} contains {RESERVED!r}, which vidcore reserves for its "
                                  "temporary files; choose another name")
    size, limit = len(os.fsencode(name)) + extra, name_max(folder) - NAME_OVERHEAD
    if size > limit:
        raise InvalidRequestError(f"{what} {name[:40]!r}... is {size - extra} bytes; at most {limit - extra} fit "
                                  f"(the file system allows {limit + NAME_OVERHEAD} and vidcore's temporary names "
                                  f"add {NAME_OVERHEAD + extra}); choose a shorter name")


def check_writable(folder: str | Path) -> Path:
    """Create and remove a file in ``folder``: the one test of writability that ACLs and read-only mounts obey."""
    d = Path(folder) if str(folder) else Path(".")
    probe = d / f".vidcore-probe-{os.getpid()}-{secrets.token_hex(4)}{LOCK_SUFFIX}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        os.unlink(probe)
    except FileNotFoundError as exc:
        raise _missing_folder(d, exc) from None
    except OSError as exc:
        raise OutputError(f"cannot write to folder {str(d)!r} ({_why(exc)}); choose another --out or fix its "
                          "permissions") from None
    return d


def _missing_folder(folder: Path, exc: OSError) -> OutputError | InvalidRequestError:
    """ENOENT on creating a file: the folder is gone, or it is a virtual one that takes no files (/proc)."""
    if folder.is_dir():
        return OutputError(f"cannot create files in folder {str(folder)!r} ({_why(exc)}); it takes no new "
                           "files (a virtual file system like /proc); choose another --out")
    return InvalidRequestError(f"output folder {str(folder)!r} does not exist; create it first")


def check_output_path(path: str | Path, *, suffix: str | None = None, overwrite: bool = False) -> Path:
    """Validate an output path before any heavy work: name, folder, writability, an existing file."""
    p = Path(path)
    if suffix and p.suffix.lower() != suffix:
        raise InvalidRequestError(f"output {str(p)!r} must end in {suffix}; e.g. --out video{suffix}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise InvalidRequestError(f"output folder {str(parent)!r} does not exist; create it first")
    if not parent.is_dir():
        raise InvalidRequestError(f"output folder {str(parent)!r} is a file, not a folder; choose another --out")
    check_name(p.name, parent)  # first: stat() of a name too long raises
    if p.is_dir():
        raise OutputError(f"output {str(p)!r} is a folder; give a file name, e.g. --out {str(p / 'video.mp4')!r}")
    try:
        path_max = int(os.pathconf(parent, "PC_PATH_MAX"))
    except (OSError, ValueError, AttributeError):
        path_max = 4096
    if len(os.fsencode(os.path.abspath(p))) + NAME_OVERHEAD >= path_max:
        raise InvalidRequestError(f"output path {str(p)[:60]!r}... is too long for the file system "
                                  f"({path_max} bytes with vidcore's temporary names); choose a shorter path")
    check_writable(parent)
    if p.exists() and not overwrite:
        raise InvalidRequestError(f"{str(p)!r} already exists; pass --overwrite to replace it or choose another --out")
    return p


# -- claims -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """The right to write ``path`` and the files beside it that share its stem (``x.json`` for ``x.mp4``)."""

    path: Path

    @property
    def lock(self) -> Path:
        return self.path.parent / f".{self.path.name}{LOCK_SUFFIX}"

    def temp(self, path: str | Path | None = None) -> Path:
        """The temporary name for ``path`` (default: the claimed file); it must share the claimed file's stem."""
        p = self.path if path is None else Path(path)
        stem = self.path.name[: len(self.path.name) - len(self.path.suffix)]
        same_folder = os.path.abspath(p.parent) == os.path.abspath(self.path.parent)
        if not same_folder or not (p.name == stem or p.name.startswith(stem + ".")):
            raise ValueError(f"a claim on {str(self.path)!r} does not cover {str(p)!r}")
        return self.path.parent / f".{self.path.name}{PART_MARK}{p.name[len(stem):]}"

    def debris(self) -> list[Path]:
        """Temporary files of this claim now in its folder (stale ones when this process holds the claim)."""
        prefix = f".{self.path.name}{PART_MARK}"
        folder = self.path.parent if str(self.path.parent) else Path(".")
        with os.scandir(folder) as it:
            return [folder / e.name for e in it if e.name.startswith(prefix)]


@dataclass
class _Held:
    pid: int
    fd: int
    count: int


_held: dict[str, _Held] = {}
_registry = threading.RLock()


def _registry_key(lock: Path) -> str:
    return os.path.join(os.path.realpath(lock.parent if str(lock.parent) else "."), lock.name)


@contextlib.contextmanager
def claim(path: str | Path, *, wait: float = 0.5) -> Iterator[Claim]:
    """Hold the exclusive right to write ``path`` (and its stem-sharing siblings) for the block.

    Taking it removes what a dead previous holder left (its temporary files);
    giving it back removes the lock file. Raises `OutputBusyError` when another
    process holds it after ``wait`` seconds of retries (a `sweep` holds a claim
    for microseconds; a writer for minutes), and `OutputError` when the folder
    cannot be written. Re-entrant within one process.
    """
    c = Claim(Path(path))
    if RESERVED in c.path.name:
        raise InvalidRequestError(f"output name {c.path.name!r} contains {RESERVED!r}, which vidcore reserves for "
                                  "its temporary files; choose another name")
    key = _registry_key(c.lock)
    with _registry:
        held = _held.get(key)
        if held is not None and held.pid == os.getpid():
            held.count += 1
        else:
            fd, stale = _acquire(c, wait)
            held = _held[key] = _Held(os.getpid(), fd, 1)
            if stale:
                _remove(c.debris())
    try:
        yield c
    finally:
        with _registry:
            held.count -= 1
            if held.count == 0:
                del _held[key]
                _release(c.lock, held.fd)


def holds(path: str | Path) -> bool:
    """Whether this process holds the claim on ``path``."""
    held = _held.get(_registry_key(Claim(Path(path)).lock))
    return held is not None and held.pid == os.getpid()


def _open_lock(c: Claim) -> tuple[int, bool]:
    """Open (creating if need be) the lock file; True when it was already there (a holder may have died)."""
    folder = c.path.parent if str(c.path.parent) else Path(".")
    try:
        try:
            return os.open(c.lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), False
        except FileExistsError:
            pass
        try:
            return os.open(c.lock, os.O_RDWR | os.O_CLOEXEC), True
        except FileNotFoundError:
            return os.open(c.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666), False
        except PermissionError:  # another user's lock file: a read-only descriptor locks as well
            return os.open(c.lock, os.O_RDONLY | os.O_CLOEXEC), True
    except FileNotFoundError as exc:
        raise _missing_folder(folder, exc) from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise InvalidRequestError(f"output name {c.path.name[:40]!r}... is too long for the file system; "
                                      "choose a shorter name") from None
        raise OutputError(f"cannot write to folder {str(folder)!r} ({_why(exc)}); choose another --out or fix its "
                          "permissions") from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _acquire(c: Claim, wait: float) -> tuple[int, bool]:
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        fd, existed = _open_lock(c)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise OutputBusyError(f"{str(c.path)!r} is being written by another vidcore process ({owner}); wait "
                                  "for it to finish or choose another --out") from None
        except OSError as exc:  # ENOLCK: a network file system without locks
            os.close(fd)
            raise OutputError(f"cannot lock {str(c.lock)!r} ({_why(exc)}); this file system does not support "
                              "file locks; choose a local --out") from None
        # the holder we waited for may have removed the file meanwhile: then we locked a name-less inode
        if not _same_file(fd, c.lock):
            os.close(fd)
            continue
        with contextlib.suppress(OSError):  # the pid is for messages only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        return fd, existed


def _owner(fd: int) -> str:
    try:
        pid, _, host = os.pread(fd, 300, 0).decode(errors="replace").strip().partition(" ")
    except OSError:
        return "pid unknown"
    if not pid.isdigit():
        return "pid unknown"
    if int(pid) == os.getpid():
        return f"this process, pid {pid}"
    return f"pid {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


def _release(lock: Path, fd: int) -> None:
    try:
        if _same_file(fd, lock):  # only the holder removes it, so this always holds; checked all the same
            with contextlib.suppress(OSError):
                os.unlink(lock)
    finally:
        os.close(fd)  # drops the lock; a process that opened the old file sees it gone and retries


def _remove(paths: Iterable[Path]) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OutputError(f"cannot remove the stale temporary file {str(p)!r} ({_why(exc)}); remove it by hand "
                              "or fix the folder's permissions") from None


def _claim_key(name: str) -> str | None:
    """The claimed file name a vidcore lock or temporary file belongs to; None for anyone else's file."""
    if not name.startswith("."):
        return None
    if name.endswith(LOCK_SUFFIX):
        key = name[1: -len(LOCK_SUFFIX)]
    elif PART_MARK in name:
        key = name[1: name.index(PART_MARK)]
    else:
        return None
    return key if key and RESERVED not in key and "/" not in key else None


def sweep(folder: str | Path, *, skip: Iterable[str] = ()) -> list[str]:
    """Remove the temporary and lock files of every free claim in ``folder``; return the claimed names cleaned.

    Claims held by a live process are left alone, and so are the claims named
    in ``skip`` (outputs their owners clean when they take them).
    """
    d = Path(folder)
    skipped = set(skip)
    with os.scandir(d) as it:
        keys = sorted({k for e in it if (k := _claim_key(e.name)) is not None and k not in skipped})
    cleaned = []
    for key in keys:
        try:
            with claim(d / key, wait=0.0) as c:
                _remove(c.debris())
        except OutputBusyError:
            continue
        cleaned.append(key)
    return cleaned


# -- atomic writes ------------------------------------------------------------------------------
def write_error(dest: str | Path, exc: OSError) -> OutputError:
    """The one-line error for an OSError met while writing ``dest``."""
    return OutputError(f"cannot write {str(dest)!r} ({_why(exc)}); {_hint(exc)}")


_claim = claim


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = False, claim: Claim | None = None) -> Iterator[Path]:
    """Yield the temporary path for ``path``; move it into place if the block succeeds, else remove it.

    Written under ``claim`` (one covering ``path``), or under a claim of its own
    taken for the block. An OSError in the block or the move (disk full,
    read-only, permissions, I/O) becomes a one-line `OutputError`.
    """
    dest = Path(path)
    with contextlib.nullcontext(claim) if claim is not None else _claim(dest) as c:
        if dest.exists() and not overwrite:
            raise InvalidRequestError(f"{str(dest)!r} already exists; pass --overwrite to replace it")
        tmp = c.temp(dest)
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # a leftover of this claim's own earlier failure
            yield tmp
            if overwrite:
                os.replace(tmp, dest)
            else:
                try:
                    os.link(tmp, dest)
                except FileExistsError:
                    raise InvalidRequestError(
                        f"{str(dest)!r} appeared while writing; pass --overwrite to replace it"
                    ) from None
                tmp.unlink()
        except OSError as exc:
            raise write_error(dest, exc) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_json_atomic(path: str | Path, data: Any, *, overwrite: bool = False, claim: Claim | None = None) -> Path:
    with atomic_path(path, overwrite=overwrite, claim=claim) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def remove_output(path: str | Path) -> None:
    """Delete an output file (one this process holds the claim on), as a one-line error when it cannot."""
    p = Path(path)
    try:
        p.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise OutputError(f"cannot remove {str(p)!r} ({_why(exc)}); fix the folder's permissions or choose another "
                          "--out") from None

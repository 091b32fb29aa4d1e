"""Downloads and the Hugging Face cache: `vidcore download` and where `vidcore.load` finds weights.

Everything goes through ``huggingface_hub.snapshot_download`` so its behaviour
is the user's: the standard cache (``HF_HOME``/``HF_HUB_CACHE``) or a plain
folder (``--dir``), ``allow_patterns`` taken from the backend's layout (so only
the files the backend needs are fetched), files already complete are never
fetched again, and a connection dropped mid-file is resumed with an HTTP Range
request. We never pass ``force_download``.

Resuming across processes is ours: huggingface_hub (since 1.x) downloads each
file into a per-process ``<name>.<random>.incomplete`` file, truncated when it
opens and deleted when a download fails, so a run that was killed leaves that
file behind and the next run starts from byte 0. During `download`,
`_resumable_downloads` swaps in a writer that keeps the partial file under one
name per file version (``blobs/<etag>.incomplete`` in the cache,
``.cache/huggingface/download/<hash>.<etag>.incomplete`` in a ``--dir``), keeps
it when a download fails, and resumes it with a Range request; it first adopts
(renames) the largest partial file a killed process left under the random name
and deletes the others. All of it happens under huggingface_hub's own per-file
lock, which a live downloader of the same file holds, so no live process's file
is touched. A resumed file is checked against its ETag (the sha256 of an LFS
file, the git blob sha1 of others) and fetched again from the start if it does
not match. Files that go through Xet storage (``hf_xet`` installed) are left to
huggingface_hub, whose Xet chunk cache makes a re-run cheap anyway.

``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME`` and ``HF_HUB_OFFLINE`` are read at
call time (huggingface_hub itself reads them once, at import), so a notebook
that sets them after ``import vidcore`` is honoured too.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoints import find_component_files
from .errors import CheckpointError, OfflineError

if TYPE_CHECKING:
    from .backend import Backend, CheckpointLayout

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(var)
        if value is not None and value.strip() != "":
            return value.strip().lower() in _TRUE
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextmanager
def _hub_offline_as_env() -> Iterator[None]:
    """Make huggingface_hub's import-time offline flag agree with the environment for one call."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def cache_dir() -> Path:
    """The standard Hugging Face hub cache, as the environment says now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def download_command(backend: Backend, dir: Path | None = None) -> str:
    return f"vidcore download {backend.name}" + (f" --dir {dir}" if dir is not None else "")


def _layout(backend: Backend) -> CheckpointLayout:
    layout = backend.layout
    if layout is None or not layout.repo_id:
        raise CheckpointError(f"backend {backend.name!r} has no hub repository to download from; "
                              "put its files in a folder and pass --ckpt DIR")
    return layout


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def missing_files(backend: Backend, folder: Path, *, local_dir: Path | None = None) -> list[str]:
    """Files the backend needs that ``folder`` lacks.

    Exact names come from the tree listing huggingface_hub cached when a
    download started; without one, from the layout's patterns.
    """
    layout = _layout(backend)
    missing: list[str] = []
    try:
        from huggingface_hub import get_cached_repo_tree
        from huggingface_hub.utils import filter_repo_objects

        tree = get_cached_repo_tree(layout.repo_id, revision=layout.revision, cache_dir=cache_dir(),
                                    local_dir=local_dir)
        wanted = filter_repo_objects([f.path for f in tree], allow_patterns=layout.allow_patterns)
        missing = [p for p in wanted if not (folder / p).is_file()]
    except Exception:  # noqa: BLE001 - no cached listing (or an older huggingface_hub): use the layout
        pass
    if folder.is_dir():
        for comp in layout.files:
            missing += find_component_files(layout, folder, comp)[1]
        missing += [p for p in layout.extra if not any(folder.glob(p))]
    else:
        missing += list(layout.allow_patterns)
    return list(dict.fromkeys(missing))


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of whichever HTTP client this huggingface_hub version uses."""
    errors: list[type[BaseException]] = [OSError, ConnectionError]
    for mod, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _describe(missing: list[str]) -> str:
    return ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")


def _offline_error(backend: Backend, where: str, missing: list[str], dir: Path | None) -> OfflineError:
    why = " (offline mode is on: HF_HUB_OFFLINE=1; unset it first)" if offline() else ""
    return OfflineError(f"{where} lacks {backend.name} file(s) {_describe(missing)}; fetch them with "
                        f"`{download_command(backend, dir)}`{why}")


# -- resuming across processes ----------------------------------------------------------------
_HF_WRITER_ARGS = {"incomplete_path", "destination_path", "url_to_download", "headers", "expected_size", "filename",
                   "force_download", "etag", "xet_file_data", "tqdm_class"}
_patch_lock = threading.Lock()
_patch_users = 0
_hf_writer: Callable[..., None] | None = None  # huggingface_hub's own writer, once ours has replaced it


def _hf_file_download() -> Any:
    """huggingface_hub's file_download module if its writer is the one we know how to replace, else None."""
    from huggingface_hub import file_download as fd

    writer = getattr(fd, "_download_to_tmp_and_move", None)
    if writer is _resuming_writer:
        return fd
    try:
        params = set(inspect.signature(writer).parameters) if callable(writer) else set()
    except (TypeError, ValueError):
        params = set()
    return fd if params == _HF_WRITER_ARGS and callable(getattr(fd, "http_get", None)) else None


@contextmanager
def _resumable_downloads() -> Iterator[None]:
    """While active, huggingface_hub keeps and resumes partial files across processes (see the module doc)."""
    global _patch_users, _hf_writer
    fd = _hf_file_download()
    if fd is None:
        log.warning("this huggingface_hub version writes downloads in a way vidcore does not know: a download "
                    "interrupted by a killed process will restart from zero")
        yield
        return
    with _patch_lock:
        if _patch_users == 0:
            if fd._download_to_tmp_and_move is not _resuming_writer:
                _hf_writer = fd._download_to_tmp_and_move
            fd._download_to_tmp_and_move = _resuming_writer
        _patch_users += 1
    try:
        yield
    finally:
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                fd._download_to_tmp_and_move = _hf_writer


def _resuming_writer(*args: Any, **kw: Any) -> None:
    """Stands in for huggingface_hub's ``_download_to_tmp_and_move``, which it calls holding this file's lock."""
    from huggingface_hub import file_download as fd

    assert _hf_writer is not None
    xet = kw.get("xet_file_data") is not None and getattr(fd, "is_xet_available", lambda: False)()
    if args or set(kw) != _HF_WRITER_ARGS or kw["force_download"] or xet:
        return _hf_writer(*args, **kw)
    destination, size = Path(kw["destination_path"]), kw["expected_size"]
    if destination.exists():
        return None
    partial = Path(kw["incomplete_path"])  # one name per file version: the etag is part of it
    _adopt_orphans(partial)
    for attempt in ("resume", "from the start"):
        resume = partial.stat().st_size if partial.is_file() else 0
        if size is not None and resume > size:
            partial.unlink()
            resume = 0
        if resume:
            log.info("resuming %s at byte %d", kw["filename"], resume)
        check_space = getattr(fd, "_check_disk_space", None)
        if size is not None and callable(check_space):  # warns when the disk looks too small
            check_space(size - resume, partial.parent)
        with partial.open("ab") as f:
            fd.http_get(kw["url_to_download"], f, resume_size=resume, headers=kw["headers"], expected_size=size,
                        tqdm_class=kw["tqdm_class"])
        if not resume or attempt != "resume" or _matches_etag(partial, kw["etag"]):
            break
        log.warning("%s: the resumed file does not match its checksum; downloading it again from the start",
                    kw["filename"])
        partial.unlink()
    getattr(fd, "_chmod_and_move", os.replace)(partial, destination)
    return None


def _adopt_orphans(partial: Path) -> None:
    """Take over what killed huggingface_hub processes left as ``<stem>.<8 hex>.incomplete``: keep the largest."""
    pattern = re.compile(re.escape(partial.stem) + r"\.[0-9a-f]{8}\.incomplete")
    try:
        orphans = sorted((p for p in partial.parent.iterdir() if pattern.fullmatch(p.name) and p.is_file()),
                         key=lambda p: p.stat().st_size)
    except FileNotFoundError:
        return
    if orphans and orphans[-1].stat().st_size > (partial.stat().st_size if partial.is_file() else 0):
        os.replace(orphans.pop(), partial)
    for p in orphans:
        p.unlink(missing_ok=True)


def _matches_etag(path: Path, etag: str | None) -> bool:
    """Whether the file's content hashes to its ETag (True when the ETag is not a content hash)."""
    etag = (etag or "").strip('"').lower()
    if re.fullmatch(r"[0-9a-f]{64}", etag):  # an LFS file: its sha256
        h = hashlib.sha256()
    elif re.fullmatch(r"[0-9a-f]{40}", etag):  # a git blob: sha1 of "blob <size>\0" + content
        h = hashlib.sha1(b"blob %d\0" % path.stat().st_size, usedforsecurity=False)
    else:
        return True
    with path.open("rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest() == etag


# -- errors of the local disk ------------------------------------------------------------------
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR,
                errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG, errno.ELOOP}


def _disk_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and not isinstance(e, ConnectionError) and e.errno in _DISK_ERRNOS


def _disk_problem(e: OSError, rerun: str) -> str:
    what = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"{what}; free some disk space, then run `{rerun}` again to resume"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{what}; make the folder writable or choose another --dir"
    return f"{what}; choose another --dir"


def download(backend: Backend, dir: Path | None = None, *, revision: str | None = None) -> Path:
    """Fetch exactly the backend's files into ``dir`` (or the standard HF cache) and return the folder.

    Offline, nothing is fetched: the folder is returned if complete, else
    `OfflineError` names what is missing.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    layout = _layout(backend)
    local_dir = Path(dir).expanduser() if dir is not None else None
    kwargs = {
        "repo_id": layout.repo_id, "allow_patterns": layout.allow_patterns,
        "revision": revision or layout.revision, "cache_dir": str(cache_dir()),
        "endpoint": os.environ.get("HF_ENDPOINT") or None,
    }
    if local_dir is not None:
        try:
            local_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if not local_dir.is_dir() and local_dir.exists():
                raise CheckpointError(f"--dir {local_dir} is a file, not a folder; choose another --dir") from None
            raise CheckpointError(f"cannot create the download folder {local_dir}: "
                                  f"{_disk_problem(e, download_command(backend, local_dir))}") from None
        kwargs["local_dir"] = str(local_dir)
    where = str(local_dir) if local_dir is not None else f"the Hugging Face cache ({cache_dir()})"
    if offline():
        return _local(backend, kwargs, where, local_dir)
    log.info("downloading %s from %s (%s)", backend.name, layout.repo_id, ", ".join(layout.allow_patterns))
    try:
        with _hub_offline_as_env(), _resumable_downloads():
            path = Path(snapshot_download(**kwargs))
    except (GatedRepoError, RepositoryNotFoundError) as e:
        raise CheckpointError(f"hub repository {layout.repo_id!r} is not accessible ({_one_line(e)}); gated "
                              "repositories need `hf auth login` and accepting their terms") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"hub repository {layout.repo_id!r} has no revision {kwargs['revision']!r}") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, *_network_errors()) as e:
        if _disk_error(e):
            raise CheckpointError(f"cannot write the download of {layout.repo_id} to {where}: "
                                  f"{_disk_problem(e, download_command(backend, local_dir))}") from None
        folder = local_dir or _snapshot_guess(layout, kwargs["revision"])
        missing = missing_files(backend, folder, local_dir=local_dir) if folder else list(layout.allow_patterns)
        raise OfflineError(f"download of {layout.repo_id} failed ({_one_line(e)}); {where} still lacks "
                           f"{_describe(missing) or 'some files'}; run `{download_command(backend, local_dir)}` "
                           "again to resume") from None
    missing = missing_files(backend, path, local_dir=local_dir)
    if missing:
        raise CheckpointError(f"hub repository {layout.repo_id} has no file for {_describe(missing)}; the "
                              f"backend {backend.name!r} layout does not match the repository")
    return path


def _snapshot_guess(layout: CheckpointLayout, revision: str | None) -> Path | None:
    """The cache snapshot folder a revision points to, if its ref was recorded."""
    from huggingface_hub.file_download import repo_folder_name

    root = cache_dir() / repo_folder_name(repo_id=layout.repo_id, repo_type="model")
    ref = root / "refs" / (revision or "main")
    if ref.is_file():
        return root / "snapshots" / ref.read_text().strip()
    return None


def _local(backend: Backend, kwargs: dict, where: str, local_dir: Path | None) -> Path:
    """The complete local copy, without any network call, or `OfflineError`."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    layout = _layout(backend)
    try:
        with _hub_offline_as_env():
            path = Path(snapshot_download(**kwargs, local_files_only=True))
    except LocalEntryNotFoundError as e:
        snap = getattr(e, "snapshot_path", None)
        folder = Path(snap) if snap else (local_dir or _snapshot_guess(layout, kwargs["revision"]))
        missing = missing_files(backend, folder, local_dir=local_dir) if folder else list(layout.allow_patterns)
        raise _offline_error(backend, where, missing, local_dir) from None
    missing = missing_files(backend, path, local_dir=local_dir)
    if missing:
        raise _offline_error(backend, where, missing, local_dir)
    return path


def resolve_checkpoint(backend: Backend, ckpt: str | Path | None) -> Path:
    """The checkpoint folder to load from: ``ckpt`` if given, else the backend's snapshot in the HF cache.

    Never touches the network. An explicit folder only has to exist (`verify`
    checks its contents); a cache snapshot must hold every file the backend
    needs, else `OfflineError` names them and the `vidcore download` command.
    """
    if ckpt is not None:
        path = Path(ckpt).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"checkpoint folder {path} does not exist; fetch it with "
                                  f"`{download_command(backend, path)}`")
        return path
    layout = backend.layout
    if layout is None or not layout.repo_id:
        raise CheckpointError(f"backend {backend.name!r} needs --ckpt DIR (it names no hub repository)")
    kwargs = {"repo_id": layout.repo_id, "allow_patterns": layout.allow_patterns, "revision": layout.revision,
              "cache_dir": str(cache_dir())}
    return _local(backend, kwargs, f"the Hugging Face cache ({cache_dir()})", None)

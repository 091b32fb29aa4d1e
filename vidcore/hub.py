"""Downloads and the Hugging Face cache: `vidcore download` and where `vidcore.load` finds weights.

Everything goes through ``huggingface_hub.snapshot_download`` so its behaviour
is the user's: the standard cache (``HF_HOME``/``HF_HUB_CACHE``) or a plain
folder (``--dir``), ``allow_patterns`` taken from the backend's layout (so only
the files the backend needs are fetched), files already complete are never
fetched again, and a connection dropped mid-file is resumed with an HTTP Range
request. We never pass ``force_download`` and never clean partial state, so a
re-run of the same command picks up where the last one stopped.

``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME`` and ``HF_HUB_OFFLINE`` are read at
call time (huggingface_hub itself reads them once, at import), so a notebook
that sets them after ``import vidcore`` is honoured too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

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
            missing += find_component_files(backend, folder, comp)[1]
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
        local_dir.mkdir(parents=True, exist_ok=True)
        kwargs["local_dir"] = str(local_dir)
    where = str(local_dir) if local_dir is not None else f"the Hugging Face cache ({cache_dir()})"
    if offline():
        return _local(backend, kwargs, where, local_dir)
    log.info("downloading %s from %s (%s)", backend.name, layout.repo_id, ", ".join(layout.allow_patterns))
    try:
        with _hub_offline_as_env():
            path = Path(snapshot_download(**kwargs))
    except (GatedRepoError, RepositoryNotFoundError) as e:
        raise CheckpointError(f"hub repository {layout.repo_id!r} is not accessible ({_one_line(e)}); gated "
                              "repositories need `hf auth login` and accepting their terms") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"hub repository {layout.repo_id!r} has no revision {kwargs['revision']!r}") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, *_network_errors()) as e:
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

"""Test helpers for checkpoints and downloads: a tiny backend, checkpoint writers, and a local fake hub.

`FakeHub` is a small HTTP server on 127.0.0.1 that speaks the part of the
Hugging Face Hub protocol ``huggingface_hub.snapshot_download`` (2.x) uses:

- ``GET /api/models/{repo}/revision/{rev}``: repo info (``sha``, ``siblings``);
- ``GET /api/models/{repo}/tree/{rev}?recursive=...``: the file listing;
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: file metadata (``ETag``,
  ``X-Repo-Commit``, ``Content-Length``) and bytes, with ``Range`` support.

It serves a folder per repository, logs every request (with the bytes of a
file it sent: ``sent``), and can drop a connection part-way through a file
(``drop``), stall part-way through one until released (``stall``: the client
sees a live but silent server, so a test can kill it mid-file at a known
point), or fail a file (``fail``) to test resumption. Point huggingface_hub at it with `hub_env` (sets
``HF_ENDPOINT``, a private cache and ``HF_HUB_OFFLINE=0``; vidcore.hub reads
them at call time), so no test ever reaches the network.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import torch
from safetensors.torch import save_file
from torch import nn

from vidcore.backend import Backend, CheckpointLayout, Defaults
from vidcore.checkpoints import rename_keys
from vidcore.nn.blocks import BlockStack

# -- a tiny backend ---------------------------------------------------------------------------


class Rope(nn.Module):
    """Holds a non-persistent table, as RoPE modules do: not in checkpoints, rebuilt after loading."""

    def __init__(self, dim: int, device: torch.device | str | None = None):
        super().__init__()
        self.dim = dim
        self.register_buffer("freqs", self._table(device), persistent=False)

    def _table(self, device: torch.device | str | None) -> torch.Tensor:
        # computed on CPU then moved: meta-device arange goes through torch._refs, which imports dynamo (slow)
        table = 1.0 / (10000 ** (torch.arange(0, self.dim, 2, dtype=torch.float32) / self.dim))
        return table.to(device) if device is not None else table

    def init_non_persistent(self, device: torch.device) -> None:
        self.freqs = self._table(device)


class Block(nn.Module):
    def __init__(self, dim: int, device: torch.device | str | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim, device=device)
        self.fc = nn.Linear(dim, dim, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(self.norm(x))


class TinyDenoiser(nn.Module):
    def __init__(self, dim: int = 8, depth: int = 2, device: torch.device | str | None = None):
        super().__init__()
        self.proj_in = nn.Linear(4, dim, device=device)
        self.blocks = BlockStack([Block(dim, device) for _ in range(depth)])
        self.rope = Rope(dim, device)
        self.register_buffer("step_count", torch.zeros((), dtype=torch.int64, device=device))  # persistent int
        self.head = nn.Linear(dim, 4, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.proj_in(x)))


class TinyVAE(nn.Module):
    def __init__(self, device: torch.device | str | None = None):
        super().__init__()
        self.enc = nn.Conv3d(3, 4, 1, device=device)
        self.dec = nn.Conv3d(4, 3, 1, device=device)


class TinyBackend(Backend):
    """Two small components; the layout (and an optional rename rule list) vary per test."""

    def __init__(self, layout: CheckpointLayout | None = None, *, name: str = "tiny-test", dim: int = 8,
                 rules: dict[str, list[tuple[str, str]]] | None = None):
        self.name = name
        self.tasks = ("t2v",)
        self.defaults = Defaults(size=(32, 32), frames=5, fps=8, steps=2, sampler="euler", schedule="flow",
                                 guidance=1.0)
        self.components = ("denoiser", "vae")
        self.layout = layout if layout is not None else single_layout()
        self.dim = dim
        self.rules = rules or {}

    def build(self, device: torch.device | str = "meta", dtype: torch.dtype | None = None) -> dict[str, nn.Module]:
        # device= arguments rather than `with torch.device(...)`, which imports torch._dynamo (seconds)
        mods = {"denoiser": TinyDenoiser(self.dim, device=device), "vae": TinyVAE(device)}
        if dtype is not None:
            for m in mods.values():
                m.to(dtype)
        return mods

    def key_map(self, component: str, names: list[str]) -> dict[str, str | None]:
        return rename_keys(names, self.rules.get(component, ()))


def single_layout(repo_id: str | None = "org/tiny") -> CheckpointLayout:
    return CheckpointLayout(repo_id=repo_id, files={"denoiser": ("denoiser.safetensors",), "vae": ("vae.pth",)},
                            extra=("config.json",))


def sharded_layout(repo_id: str | None = "org/tiny") -> CheckpointLayout:
    return CheckpointLayout(
        repo_id=repo_id,
        files={"denoiser": ("denoiser/*.safetensors.index.json", "denoiser/*.safetensors"),
               "vae": ("vae/*.safetensors",)},
        extra=("config.json",))


def reference_weights(backend: Backend, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Random weights for every component, built on CPU, as the state dicts a checkpoint holds."""
    torch.manual_seed(seed)
    mods = backend.build("cpu")
    out = {}
    for comp, m in mods.items():
        for p in m.parameters():  # make every tensor distinct (LayerNorm starts at ones/zeros)
            nn.init.normal_(p)
        out[comp] = {k: v.detach().clone() for k, v in m.state_dict().items()}
    return out


def write_safetensors(sd: dict[str, torch.Tensor], path: Path, shards: int = 1) -> list[Path]:
    """One file, or ``shards`` files plus a ``<stem>.safetensors.index.json`` (diffusers naming)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in sd.items()}
    if shards == 1:
        save_file(sd, str(path))
        return [path]
    names = list(sd)
    stem = path.name.removesuffix(".safetensors")
    weight_map, files = {}, []
    for i in range(shards):
        part = names[i::shards]
        fname = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: sd[k] for k in part}, str(path.parent / fname))
        files.append(path.parent / fname)
        weight_map.update(dict.fromkeys(part, fname))
    index = path.parent / f"{stem}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return [*files, index]


def write_checkpoint(backend: TinyBackend, folder: Path, weights: dict[str, dict[str, torch.Tensor]],
                     *, shards: int = 2) -> Path:
    """Write ``weights`` in the backend's layout (single or sharded), plus config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    files = backend.layout.files
    for comp, sd in weights.items():
        first = files[comp][0]
        if "*" in first:  # a folder pattern: "<comp>/*..." -> sharded when an index is part of the layout
            n = shards if any(p.endswith(".index.json") for p in files[comp]) else 1
            write_safetensors(sd, folder / comp / "diffusion_pytorch_model.safetensors", shards=n)
        elif first.endswith(".pth"):
            torch.save(sd, folder / first)
        elif first.endswith(".safetensors"):
            write_safetensors(sd, folder / first)
        else:
            raise ValueError(f"write_checkpoint cannot write pattern {first!r}")
    (folder / "config.json").write_text(json.dumps({"dim": backend.dim}))
    return folder


# -- the fake hub -----------------------------------------------------------------------------


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """A local Hub-compatible HTTP server serving ``{root}/{org}/{name}/...`` folders as repositories."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[dict[str, Any]] = []
        self.drop: dict[str, int] = {}  # path in repo -> byte offset at which the next GET is cut (once)
        self.fail: set[str] = set()  # paths in repo whose HEAD/GET answer 403 (not retried by the client)
        self.stall: dict[str, int] = {}  # path in repo -> file offset at which GETs stop sending until released
        self.stalled = threading.Event()  # set when a GET has reached its stall offset
        self.release = threading.Event()  # set to let stalled GETs hang up (also on stop)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # repository content
    def add_repo(self, repo_id: str, folder: Path | None = None, files: dict[str, bytes] | None = None) -> Path:
        dst = self.root / repo_id
        dst.mkdir(parents=True, exist_ok=True)
        if folder is not None:
            for p in sorted(Path(folder).rglob("*")):
                if p.is_file():
                    (dst / p.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
                    (dst / p.relative_to(folder)).write_bytes(p.read_bytes())
        for rel, data in (files or {}).items():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).write_bytes(data)
        return dst

    def files(self, repo_id: str) -> dict[str, Path]:
        base = self.root / repo_id
        return {p.relative_to(base).as_posix(): p for p in sorted(base.rglob("*")) if p.is_file()}

    def commit(self, repo_id: str) -> str:
        h = hashlib.sha1(repo_id.encode())
        for rel, p in self.files(repo_id).items():
            h.update(rel.encode() + hashlib.sha256(p.read_bytes()).digest())
        return h.hexdigest()

    def gets(self, path: str | None = None) -> list[dict[str, Any]]:
        """GET requests for file bytes (optionally of one path in the repo)."""
        return [r for r in self.requests if r["method"] == "GET" and r.get("file") is not None
                and (path is None or r["file"] == path)]

    # server
    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def sent(self, path: str) -> int:
        """Bytes of ``path`` sent over all GETs so far."""
        return sum(r.get("sent", 0) for r in self.gets(path))

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # request handling
    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict | None = None,
              head: bool = False) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, str(v))
        if "Content-Length" not in (headers or {}):
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head and body:
            h.wfile.write(body)

    def _json(self, h: BaseHTTPRequestHandler, obj: Any, head: bool = False) -> None:
        self._send(h, 200, json.dumps(obj).encode(), {"Content-Type": "application/json"}, head)

    def _not_found(self, h: BaseHTTPRequestHandler, code: str, head: bool, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": f"{code} (fake hub)"}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(h, 404, b'{"error": "not found"}', headers, head)

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        entry: dict[str, Any] = {"method": "HEAD" if head else "GET", "path": path, "range": h.headers.get("Range")}
        with self._lock:
            self.requests.append(entry)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(/.*)?", path)
        if m:
            repo, kind, rev = m.group(1), m.group(2), m.group(3)
            if not (self.root / repo).is_dir():
                return self._not_found(h, "RepoNotFound", head)
            files, commit = self.files(repo), self.commit(repo)
            if rev not in ("main", commit):
                return self._not_found(h, "RevisionNotFound", head)
            if kind == "revision":
                return self._json(h, {"id": repo, "modelId": repo, "sha": commit, "private": False,
                                      "siblings": [{"rfilename": f} for f in files]}, head)
            listing = [{"type": "file", "path": rel, "size": p.stat().st_size,
                        "oid": _git_blob_oid(p.read_bytes())} for rel, p in files.items()]
            return self._json(h, listing, head)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if not m:
            return self._send(h, 400, b"bad request", head=head)
        repo, rev, rel = m.groups()
        entry["file"] = rel
        if not (self.root / repo).is_dir():
            return self._not_found(h, "RepoNotFound", head)
        files, commit = self.files(repo), self.commit(repo)
        if rel not in files:
            return self._not_found(h, "EntryNotFound", head, commit)
        if rel in self.fail:
            return self._send(h, 403, b"refused (fake hub)", {"X-Repo-Commit": commit}, head)
        data = files[rel].read_bytes()
        headers = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": commit,
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        start, end = 0, len(data) - 1
        status = 200
        rng = h.headers.get("Range")
        if rng and not head:
            rm = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if rm:
                start = int(rm.group(1))
                end = min(int(rm.group(2)), end) if rm.group(2) else end
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start:end + 1]
        headers["Content-Length"] = len(body) if status == 206 else len(data)
        if head:
            return self._send(h, 200, b"", headers, head=True)
        with self._lock:
            cut = self.drop.pop(rel, None) if status == 200 else None
        stall = self.stall.get(rel)
        if cut is None and (stall is None or not start <= stall < end + 1):
            entry["sent"] = len(body)
            return self._send(h, status, body, headers)
        # announce the whole body, send part of it, then (after a stall) drop the connection
        part = body[:cut] if cut is not None else body[:stall - start]
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, str(v))
        h.end_headers()
        try:
            h.wfile.write(part)
            h.wfile.flush()
            entry["sent"] = len(part)
            if cut is None:
                self.stalled.set()
                self.release.wait(60)
        except OSError:  # the client went away (was killed) while we were sending
            pass
        h.close_connection = True
        try:
            import socket

            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


@contextmanager
def hub_env(monkeypatch: Any, tmp_path: Path) -> Iterator[FakeHub]:
    """A started `FakeHub` with huggingface_hub pointed at it and a private, empty cache."""
    hub = FakeHub(tmp_path / "hub-repos").start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield hub
    finally:
        hub.stop()

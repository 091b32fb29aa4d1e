"""`vidcore serve`: the flags, the checks, the socket, then uvicorn until stopped.

Every check that can fail runs before the port is bound (one line, exit 2):
the extra is installed, names are registered, a non-loopback ``--host`` has
an API key, ``--out`` and the store can be used, the port is free. The line
``serving on http://HOST:PORT`` on stdout says the socket is listening
(``--port 0`` picks a free port and that line names it).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
from pathlib import Path

from ..errors import InvalidRequestError, VidcoreError
from .config import MIB, ServeConfig

log = logging.getLogger(__name__)
#: what the serve extra brings: module -> distribution
MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "pydantic": "pydantic", "prometheus_client": "prometheus-client",
           "python_multipart": "python-multipart"}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; any other needs "
                   "an API key)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0: any free port)")
    p.add_argument("--backend", action="append", metavar="NAME", help="a backend to serve (repeatable; default: "
                   "the embedded latte-shapes); clients name it as the model")
    p.add_argument("--ckpt", action="append", metavar="NAME=DIR", help="checkpoint folder of a served backend "
                   "(default: the Hugging Face cache)")
    p.add_argument("--memory", default="resident", metavar="PRESET", help="memory preset of every worker")
    p.add_argument("--dtype", metavar="D", help="weight dtype: fp32, bf16 or fp16")
    p.add_argument("--device", action="append", metavar="DEV", help="a worker's device (repeatable; default: one "
                   "worker per visible GPU, or one on the CPU)")
    p.add_argument("--store", metavar="URL", help="job store: sqlite:///PATH (default: jobs.sqlite3 under --out), "
                   "or postgresql://USER@HOST:PORT/DB to share one queue between servers")
    p.add_argument("--api-key", metavar="KEY", help="require Authorization: Bearer KEY (default: $VIDCORE_API_KEY; "
                   "prefer the variable: flags show in the process list)")
    p.add_argument("--out", metavar="DIR", default="vidcore-serve", help="videos, run records, uploads and the "
                   "default store (default: ./vidcore-serve)")
    p.add_argument("--max-queue", type=int, default=100, metavar="N", help="queued jobs before new ones get 429")
    p.add_argument("--max-body-mb", type=float, default=32.0, metavar="MB", help="largest request body or upload")


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    from ..plugins import DEFAULT_BACKEND, DEFAULT_BACKEND_HINT, backends

    names = tuple(args.backend or [DEFAULT_BACKEND])
    if args.backend is None and DEFAULT_BACKEND not in backends():
        raise InvalidRequestError(DEFAULT_BACKEND_HINT)
    ckpts = {}
    for spec in args.ckpt or []:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise InvalidRequestError(f"--ckpt {spec!r} is not NAME=DIR")
        ckpts[name] = folder
    key = args.api_key if args.api_key is not None else os.environ.get("VIDCORE_API_KEY") or None
    return ServeConfig(backends=names, out=Path(args.out), host=args.host, port=args.port, memory=args.memory,
                       dtype=args.dtype, store=args.store, api_key=key, ckpts=ckpts,
                       devices=tuple(args.device) if args.device else None, max_queue=args.max_queue,
                       max_body_bytes=int(args.max_body_mb * MIB))


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or the one line why not (the port is taken, the address is not this machine's)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise InvalidRequestError(f"--host {host!r} is not an address of this machine") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InvalidRequestError(f"port {port} on {host} is in use; stop what holds it or choose another "
                                      "--port") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise InvalidRequestError(f"port {port} needs privileges; use a port above 1023") from None
        raise InvalidRequestError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    return sock


def run(args: argparse.Namespace) -> int:
    import importlib.util

    for module, dist in MODULES.items():
        if importlib.util.find_spec(module) is None:
            raise VidcoreError(f"vidcore serve needs {dist}; install the extra: pip install 'vidcore[serve]'")
    import uvicorn

    from .app import create_app
    from .server import Server

    config = config_from_args(args)
    server = Server(config)
    try:
        sock = bind(config.host, config.port)
    except BaseException:
        server.store.close()
        raise
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("vidcore").setLevel(logging.INFO)
    print(f"serving on http://{shown}:{port} ({', '.join(config.backends)}; {len(server.devices)} worker(s) on "
          f"{', '.join(server.devices)}; out {config.out})", flush=True)
    uconfig = uvicorn.Config(create_app(server), log_level="info" if getattr(args, "verbose", False) else "warning",
                             access_log=bool(getattr(args, "verbose", False)), server_header=False)
    uvicorn.Server(uconfig).run(sockets=[sock])
    return 0

"""The playground page: ``GET /`` and its script and style under ``/static/``, shipped with the package.

Plain HTML, JavaScript and CSS (``vidcore/serve/static``), no build step and
nothing fetched from elsewhere: the page talks only to this server's API. The
files are read once, served by name from a fixed list (no path from a request
reaches the file system), and sent with a Content-Security-Policy that allows
only this origin (``default-src 'self'``; videos play from ``blob:`` URLs the
script makes, since a ``<video>`` cannot send the API key).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from .errors import ApiError

FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "style.css": "text/css; charset=utf-8"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def load_files() -> dict[str, bytes]:
    folder = resources.files("vidcore.serve") / "static"
    return {name: (folder / name).read_bytes() for name in FILES}


def router() -> APIRouter:
    r = APIRouter()
    files = load_files()

    def send(name: str) -> Response:
        return Response(files[name], media_type=FILES[name], headers=HEADERS)

    @r.get("/", include_in_schema=False)
    def index() -> Response:
        return send("index.html")

    @r.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in files:
            raise ApiError(404, f"no file {name[:80]!r} here", code="not_found")
        return send(name)

    return r

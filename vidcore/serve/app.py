"""The FastAPI application of a `Server`: ``/v1`` (videos, models), ``/health``, ``/metrics``, the playground.

Everything but ``/health`` and the playground page (``/``, ``/static/``) needs the API key when one is set. The workers
start with the application and stop with it (a running job goes back to the
queue); CORS is off (no cross-origin headers are sent).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from .errors import check_key, install
from .limits import BodyLimit
from .page import router as page_router
from .schemas import ModelList, ModelObject
from .server import Server
from .videos import router as videos_router


def create_app(server: Server) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.start()
        try:
            yield
        finally:
            server.stop()

    app = FastAPI(title="vidcore", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/v1/openapi.json")
    app.add_middleware(BodyLimit, max_bytes=server.config.max_body_bytes)
    install(app, server.config.max_body_bytes)

    def keyed(request: Request) -> None:
        check_key(request, server.config.api_key)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(keyed)])
    v1.include_router(videos_router(server))

    @v1.get("/models", response_model=ModelList)
    def models() -> ModelList:
        from ..plugins import backend_plugin

        return ModelList(data=[ModelObject(id=name, created=server.started_at, owned_by=backend_plugin(name))
                               for name in server.backends])

    app.include_router(v1)
    app.include_router(page_router())

    def health_body() -> dict[str, Any]:
        return {"status": "ok", "ready": server.ready, "api_key_required": server.config.api_key is not None,
                "workers": [w.state() for w in server.workers]}

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness: the process answers. ``ready`` says whether every worker has its weights loaded."""
        return health_body()

    @app.get("/health/ready")
    def ready() -> JSONResponse:
        """Readiness: 200 once every worker has loaded its pipelines, 503 before (or when one failed to)."""
        return JSONResponse(health_body(), status_code=200 if server.ready else 503)

    @app.get("/metrics", dependencies=[Depends(keyed)])
    def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app

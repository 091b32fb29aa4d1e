"""The videos routes of OpenAI's API (create, retrieve, content, list, delete) and ours: a video's run record.

A create request is checked completely (`vidcore.serve.intake.accept`) and
stored before it is answered, so a job that got its id is never lost. Ids are
made here; files are found by id only (`vidcore.serve.files.JobFiles`).
"""

from __future__ import annotations

import copy
import json
import socket
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from .. import validate
from ..errors import InvalidRequestError
from ..fileio import atomic_path
from ..records import read_record
from .errors import ApiError
from .files import JobFiles, is_id, new_id
from .intake import FIELDS, accept, check_image, form_value, from_form, reference_bytes
from .schemas import VideoDeleted, VideoList, VideoObject, video_object
from .server import Server
from .store import Job


async def read_fields(request: Request) -> tuple[dict[str, Any], bytes | None]:
    """The fields of a multipart/form-data, urlencoded or JSON body, and the input image's bytes if any."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=1, max_fields=2 * len(FIELDS))
        fields: dict[str, Any] = {}
        upload = None
        for name, value in form.multi_items():
            if name in fields or (name == "input_reference" and upload is not None):
                raise InvalidRequestError(f"field {name[:40]!r} is given more than once")
            if isinstance(value, UploadFile):
                if name != "input_reference":
                    raise InvalidRequestError(f"field {name[:40]!r} must be text, not a file")
                upload = await value.read()
            elif name == "input_reference":
                raise InvalidRequestError("input_reference must be an image file upload in a multipart form")
            else:
                fields[name] = value
        return from_form(fields), upload
    if kind == "application/json":
        try:
            data = json.loads(await request.body())
        except (ValueError, RecursionError):
            raise InvalidRequestError("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise InvalidRequestError("the JSON body must be an object of fields")
        ref = data.pop("input_reference", None)
        return data, None if ref is None else reference_bytes(ref)
    raise InvalidRequestError("send the fields as multipart/form-data or application/json")


def public_record(record: dict[str, Any]) -> dict[str, Any]:
    """A run record as the API shows it: the server's folders reduced to file names (the upload is its field)."""
    shown = copy.deepcopy(record)
    request = shown.get("request")
    if isinstance(request, dict) and request.get("image"):
        request["image"] = "input_reference"
    checkpoint = shown.get("checkpoint")
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("dir"), str):
        checkpoint["dir"] = Path(checkpoint["dir"]).name
    for lora in shown.get("loras") or []:
        if isinstance(lora, dict) and isinstance(lora.get("path"), str):
            lora["path"] = Path(lora["path"]).name
    return shown


def router(server: Server) -> APIRouter:
    r = APIRouter()
    out, store, config = server.config.out, server.store, server.config

    def job_or_404(video_id: str) -> Job:
        job = store.get(video_id) if is_id(video_id) else None
        if job is None:
            raise ApiError(404, f"no video {video_id[:80]!r} here", code="not_found", param="video_id")
        return job

    @r.post("/videos", response_model=VideoObject)
    async def create(request: Request) -> VideoObject:
        fields, upload = await read_fields(request)
        files = JobFiles(out, new_id())
        image = None
        if upload is not None:
            image = files.input(check_image(upload))
            with atomic_path(image) as tmp:
                tmp.write_bytes(upload)
        try:
            accepted = await run_in_threadpool(accept, fields, server.backends, image=image, device=server.devices[0])
            req = accepted.request
            job = Job(id=files.id, model=req.backend, prompt=req.prompt, request=req.to_dict(), size=accepted.size,
                      seconds=accepted.seconds, created_at=int(time.time()))
            await run_in_threadpool(store.add, job, max_queued=config.max_queue)
        except BaseException:
            if image is not None:
                image.unlink(missing_ok=True)
            raise
        server.wake.set()
        return video_object(job)

    @r.get("/videos", response_model=VideoList)
    def list_videos(after: str | None = None, limit: str = "20", order: str = "desc") -> VideoList:
        n = validate.integer("limit", form_value(limit), lo=1, hi=100)
        if order not in ("asc", "desc"):
            raise InvalidRequestError(f"order must be asc or desc; got {order[:20]!r}")
        if after is not None:
            job_or_404(after)
        jobs, more = store.list(after=after, limit=n, order=order)
        data = [video_object(j) for j in jobs]
        return VideoList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                         has_more=more)

    @r.get("/videos/{video_id}", response_model=VideoObject)
    def retrieve(video_id: str, response: Response) -> VideoObject:
        job = job_or_404(video_id)
        if job.status in ("queued", "in_progress"):
            response.headers["openai-poll-after-ms"] = str(config.poll_after_ms)
        return video_object(job)

    @r.get("/videos/{video_id}/content", response_class=FileResponse)
    def content(video_id: str, variant: str = "video") -> FileResponse:
        job = job_or_404(video_id)
        if variant != "video":
            raise InvalidRequestError(f"variant {variant[:40]!r} is not available here; only 'video' (the mp4)")
        if job.status != "completed":
            raise ApiError(404, f"video {job.id!r} has no content yet (status {job.status}); download it once it is "
                           "completed", code="not_ready")
        path = JobFiles(out, job.id).video
        if not path.is_file():
            maker = (job.owner or "").split(":")[0]
            if store.recover_interval is not None and maker and maker != socket.gethostname():
                raise ApiError(404, f"the file of video {job.id!r} is not in this server's --out (host {maker[:80]} "
                               "made it); servers that share a job store need one shared --out", code="not_found")
            raise ApiError(404, f"the file of video {job.id!r} is gone from the server", code="not_found")
        return FileResponse(path, media_type="video/mp4", filename=f"{job.id}.mp4")

    @r.get("/videos/{video_id}/record")
    def record(video_id: str) -> dict[str, Any]:
        """The run record beside the video (``vidcore generate --from-record`` replays it), once completed."""
        job = job_or_404(video_id)
        path = JobFiles(out, job.id).record
        if job.status != "completed" or not path.is_file():
            raise ApiError(404, f"video {job.id!r} has no run record yet (status {job.status}); it is written when "
                           "the video is", code="not_ready")
        return public_record(read_record(path))

    @r.delete("/videos/{video_id}", response_model=VideoDeleted)
    def delete(video_id: str) -> VideoDeleted:
        job = job_or_404(video_id)
        gone = store.delete(job.id)
        if gone is None:
            raise ApiError(404, f"no video {video_id!r} here", code="not_found", param="video_id")
        if gone.status == "in_progress":
            server.cancel(gone.id)  # the worker stops at its next step and removes what it wrote
        JobFiles(out, gone.id).remove_all()
        return VideoDeleted(id=gone.id)

    return r

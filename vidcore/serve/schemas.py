"""The JSON the API returns, shaped as the official `openai` SDK reads it (``openai.types.Video`` and friends)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from .store import Job


class VideoError(BaseModel):
    code: str
    message: str


class VideoObject(BaseModel):
    """``openai.types.Video``."""

    id: str
    object: Literal["video"] = "video"
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    model: str
    prompt: str | None = None
    remixed_from_video_id: str | None = None
    seconds: str
    size: str
    error: VideoError | None = None


class VideoList(BaseModel):
    """``openai.pagination.SyncConversationCursorPage[Video]``: the SDK pages with ``after=last_id``."""

    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VideoDeleted(BaseModel):
    """``openai.types.VideoDeleteResponse``."""

    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope; the SDK raises it as ``openai.APIStatusError`` with ``.body`` the inner object."""

    error: ErrorBody


def video_object(job: Job) -> VideoObject:
    return VideoObject(id=job.id, status=job.status, progress=job.progress, created_at=job.created_at,
                       completed_at=job.completed_at, model=job.model, prompt=job.prompt, seconds=job.seconds,
                       size=job.size, error=VideoError(**job.error) if job.error else None)

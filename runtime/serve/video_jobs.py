"""The video jobs of the OpenAI front (OpenAI's Videos API, as SGLang-Diffusion and vLLM-Omni serve it): POST
/v1/videos answers at once with a job, which runs on Triton in the background; GET /v1/videos/{id} says how it
stands, GET /v1/videos/{id}/content gives its .mp4 once completed (the bytes ptdit-run writes for the same seed).

A job is refused (503) while the jobs in flight fill what the served model holds (its instances and queue); image
requests share that queue, so a job may still fail with server_busy. Jobs live in the front's memory: at most
MAX_JOBS, the oldest finished one forgotten first, all of them lost when the front stops (its in-flight jobs are
cancelled then). Behind a Service of several pods, a client's polls must reach the pod that holds its job:
ptdit-serve kubernetes writes a Service for the videos API that keeps a client on one pod (ClientIP affinity).
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from ..pipeline.output import pipeline_metadata
from ..pipeline.video_file import clip_metadata, write_video
from .client import Generated
from .openai_api import ApiError, ServedModel, VideoRequest

MAX_JOBS = 256


@dataclass
class VideoJob:
    id: str
    model: ServedModel
    asked: VideoRequest
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "queued"  # queued, in_progress, completed, failed (OpenAI's)
    completed_at: int | None = None
    error: ApiError | None = None
    mp4: bytes | None = None
    task: asyncio.Task[None] | None = None

    def body(self) -> dict[str, Any]:
        request = self.asked.request
        return {"id": self.id, "object": "video", "model": self.model.name, "status": self.status,
                "progress": 100 if self.status == "completed" else 0, "created_at": self.created_at,
                "completed_at": self.completed_at, "expires_at": None, "prompt": request.prompt,
                "size": str(self.asked.size), "seconds": f"{self.model.seconds:.2f}", "seed": request.seed,
                "error": None if self.error is None else {"code": self.error.code, "message": self.error.message}}


def encode_clip(generated: Generated, job: VideoJob) -> bytes:
    """The clip as ptdit-run writes it for the same request: the same frames, tags and encoder settings."""
    request, size = job.asked.request, job.asked.size
    metadata = pipeline_metadata(request.prompt, request.negative_prompt, generated.pipeline, request.steps,
                                 request.guidance_scale, request.seed, size.height if job.asked.size_given else None,
                                 size.width if job.asked.size_given else None)
    frames = list(generated.pixels)
    assert job.model.frames is not None  # a video pipeline's job
    metadata = clip_metadata(metadata, job.model.frames, len(frames))
    with tempfile.TemporaryDirectory(prefix="ptdit-front-") as folder:
        path = Path(folder) / "clip.mp4"
        write_video(path, "mp4", frames, metadata)
        return path.read_bytes()


class VideoJobs:
    def __init__(self) -> None:
        self.jobs: dict[str, VideoJob] = {}

    def start(self, model: ServedModel, asked: VideoRequest, generate: Callable[[VideoRequest], Awaitable[Generated]],
              capacity: int) -> VideoJob:
        """A job, running; refused (503) while the jobs in flight fill what the served model holds (`capacity`, its
        instances and queue), so that a job is not accepted only to fail on a full queue."""
        in_flight = sum(job.status in ("queued", "in_progress") for job in self.jobs.values())
        if capacity and in_flight >= capacity:
            raise ApiError(503, f"{in_flight} video jobs are in flight, all the server holds: retry later",
                           code="server_busy")
        if len(self.jobs) >= MAX_JOBS:
            finished = [job for job in self.jobs.values() if job.status in ("completed", "failed")]
            if not finished:
                raise ApiError(503, f"{MAX_JOBS} video jobs are in flight: retry later", code="server_busy")
            del self.jobs[min(finished, key=lambda job: job.created_at).id]
        job = VideoJob(f"video_{secrets.token_hex(12)}", model, asked)
        self.jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job, generate))
        return job

    async def _run(self, job: VideoJob, generate: Callable[[VideoRequest], Awaitable[Generated]]) -> None:
        job.status = "in_progress"
        try:
            generated = await generate(job.asked)
            job.mp4 = await asyncio.to_thread(encode_clip, generated, job)
            job.status = "completed"
        except ApiError as e:
            job.status, job.error = "failed", e
        except Exception as e:  # noqa: BLE001 (the job says it failed; the front serves on)
            job.status, job.error = "failed", ApiError(500, f"{type(e).__name__}: {e}", code="internal_error")
        job.completed_at = int(time.time())

    def get(self, video_id: str) -> VideoJob:
        if video_id not in self.jobs:
            raise ApiError(404, f"no video {video_id!r} here (jobs live in the memory of the front that made them)",
                           "video_id", "video_not_found")
        return self.jobs[video_id]

    def content(self, video_id: str, variant: str | None) -> bytes:
        job = self.get(video_id)
        if variant not in (None, "video"):
            raise ApiError(400, f"'variant' {variant!r} is not served: only the video", "variant", "invalid_value")
        if job.mp4 is None:
            raise ApiError(409, f"video {video_id} is {job.status}, not completed", "video_id", "video_not_ready")
        return job.mp4

    def delete(self, video_id: str) -> dict[str, Any]:
        job = self.get(video_id)
        if job.task is not None:
            job.task.cancel()
        del self.jobs[video_id]
        return {"id": video_id, "object": "video.deleted", "deleted": True}

    async def close(self) -> None:
        running = [job.task for job in self.jobs.values() if job.task is not None and not job.task.done()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

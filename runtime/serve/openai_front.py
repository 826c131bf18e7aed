"""The OpenAI-compatible front of a served pipeline: Starlette on uvicorn, forwarding each image to Triton over gRPC
(tritonclient's asyncio client, one channel for every request). The front holds no pipeline: Triton's model is the
one that draws, and its queue the one that says "busy".

    GET  /v1/models                  the served model (its id: the pipeline folder's name)
    POST /v1/images/generations      OpenAI's images API (runtime/serve/openai_api.py says which fields)
    POST /v1/videos, GET /v1/videos[/{id}[/content]], DELETE /v1/videos/{id}
                                     OpenAI's Videos API, for a video pipeline (runtime/serve/video_jobs.py)
    GET  /health/live, /health/ready the front is up; Triton and its model are ready (Kubernetes' probes)

Errors are OpenAI's error JSON: 400 for a bad field (named in `param`), 404 for another model or path, 413 for a
body over 1 MiB, 415 for a body that is not JSON, 503 when Triton is not ready or its queue is full (with
Retry-After), 504 when Triton does not answer in the front's request timeout, 500 when the pipeline fails.

    front = Front("127.0.0.1:8001", request_timeout_s=600)
    front.start("127.0.0.1", 8080)     # serves in a thread of its own
    ...
    front.stop(exit_timeout_s=60)      # stops listening, lets the requests in flight finish
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from ptdit.contract.errors import Failure, InputError, option

from . import protocol
from .client import TIMEOUT_S, Generated, check_address, quiet_grpc, read_answer, refusal_kind, request_inputs
from .openai_api import MAX_BODY_BYTES, ApiError, ServedModel, parse_images_request, parse_video_request, read_json
from .server import check_port_free
from .video_jobs import VideoJobs

RETRY_AFTER_S = "1"
CONFIG_TIMEOUT_S = 10.0
REQUEST_ID = re.compile(r"^\[request id: [^\]]*\]\s*")  # Triton's prefix of its refusals


def requests_held(config: dict[str, Any]) -> int:
    """How many requests the served model takes before Triton refuses more: its instances and its queue."""
    instances = sum(int(group.get("count", 1)) * max(1, len(group.get("gpus", []))) for group in
                    config.get("instance_group", []))
    queue = config.get("dynamic_batching", {}).get("default_queue_policy", {}).get("max_queue_size", 0)
    return max(1, instances) + int(queue)


class TritonForward:
    """The front's side of Triton: its asyncio gRPC client, opened in the front's event loop, and what the served
    model is (read once Triton answers; Triton may start after the front, as pods' containers do)."""

    def __init__(self, url: str, request_timeout_s: float) -> None:
        self.url, self.request_timeout_s = url, request_timeout_s
        self._client: Any = None
        self._grpc: Any = None
        self._model: ServedModel | None = None
        self.capacity = 0  # the requests the served model holds at once, running and queued (its config's)

    async def open(self) -> None:
        quiet_grpc()
        import tritonclient.grpc.aio as grpc_aio

        self._grpc = grpc_aio
        self._client = grpc_aio.InferenceServerClient(self.url)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def _call(self, coroutine: Any, timeout_s: float | None = None) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return await coroutine
        except InferenceServerException as e:
            kind, message = refusal_kind(e), REQUEST_ID.sub("", e.message() or str(e))
            if kind == "no server":
                raise ApiError(503, f"Triton does not answer at {self.url}", code="server_unavailable") from None
            if kind == "busy":
                raise ApiError(503, f"the server is busy or not ready: {message}", code="server_busy") from None
            if kind == "timeout":
                raise ApiError(504, f"Triton gave no answer in {timeout_s or self.request_timeout_s:g} s",
                               code="timeout") from None
            if kind == "invalid":
                raise ApiError(400, f"the server refused the request: {message}", code="invalid_value") from None
            raise ApiError(500, f"the pipeline failed: {message}", code="pipeline_failed") from None

    async def model(self) -> ServedModel:
        if self._model is None:
            config = await self._call(self._client.get_model_config(protocol.MODEL, as_json=True,
                                                                    client_timeout=CONFIG_TIMEOUT_S), CONFIG_TIMEOUT_S)
            try:
                self._model = ServedModel.from_config(config["config"])
            except InputError as e:
                raise ApiError(500, str(e), code="foreign_model") from None
            self.capacity = requests_held(config["config"])
        return self._model

    async def ready(self) -> bool:
        try:
            return bool(await self._client.is_model_ready(protocol.MODEL, client_timeout=5))
        except Exception:  # noqa: BLE001 (any failure to answer is "not ready")
            return False

    async def generate(self, request: protocol.Request, pipeline: str) -> Generated:
        inputs = request_inputs(self._grpc, request.prompt, request.negative_prompt, request.seed, request.steps,
                                request.guidance_scale, request.height, request.width, cache=request.cache)
        answer = await self._call(self._client.infer(protocol.MODEL, inputs, client_timeout=self.request_timeout_s))
        return read_answer(answer, pipeline)


async def all_or_none(calls: list[Any]) -> list[Any]:
    """Every call's result; the first failure cancels the others (their images would be thrown away)."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def png_bytes(pixels: Any) -> bytes:
    """uint8 [H, W, 3] as a PNG file's bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(pixels: Any) -> str:
    return base64.b64encode(png_bytes(pixels)).decode("ascii")


def create_app(server_url: str, request_timeout_s: float = 600.0) -> Any:
    """The ASGI application forwarding to the Triton server at server_url (HOST:GRPC-PORT)."""
    quiet_grpc()  # before gRPC's first import, which reads it
    import tritonclient.grpc.aio  # noqa: F401 (here: a missing package is named before the front starts)
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    check_address(server_url)
    TIMEOUT_S.check(option("request_timeout_s"), request_timeout_s)
    triton = TritonForward(server_url, request_timeout_s)
    jobs = VideoJobs()

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await triton.open()
        try:
            yield
        finally:
            await jobs.close()
            await triton.close()

    def error(e: ApiError) -> JSONResponse:
        headers = {"Retry-After": RETRY_AFTER_S} if e.status == 503 else None
        return JSONResponse(e.body(), e.status, headers=headers)

    async def body_of(request: Request, form: bool = False) -> dict[str, Any]:
        """The JSON body; form: a multipart/form-data one too (the SDK's POST /v1/videos), as text values. Read
        whole, up to MAX_BODY_BYTES, before it is parsed, however it is sent (a length, or chunks)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        multipart = form and kind == "multipart/form-data"
        if kind != "application/json" and not multipart:
            accepted = "application/json or multipart/form-data" if form else "application/json"
            raise ApiError(415, f"the body must be {accepted}, got {kind or 'no content type'}",
                           code="unsupported_media_type")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_BODY_BYTES:
                raise ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes", code="body_too_large")
        if not multipart:
            return read_json(bytes(data))

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": bytes(data), "more_body": False}

        try:
            async with Request(request.scope, replay).form(max_files=1, max_fields=64) as fields:
                values = dict(fields.items())
        except Exception as e:  # noqa: BLE001 (the parser's errors: a malformed form is the client's)
            raise ApiError(400, f"the form is not readable: {e}", code="invalid_form") from None
        for name, value in values.items():
            if not isinstance(value, str) and name != "input_reference":  # refused by name after
                raise ApiError(400, f"'{name}' is a file; it takes text", name, "invalid_value")
        return {name: value if isinstance(value, str) else "(a file)" for name, value in values.items()}

    async def models(request: Request) -> JSONResponse:
        try:
            model = await triton.model()
        except ApiError as e:
            return error(e)
        return JSONResponse({"object": "list", "data": [
            {"id": model.name, "object": "model", "created": 0, "owned_by": "ptdit",
             "sizes": [str(size) for size in model.sizes]}]})

    async def images(request: Request) -> JSONResponse:
        try:
            body = await body_of(request)
            model = await triton.model()
            asked = parse_images_request(body, model)
            made = await all_or_none([triton.generate(one, model.name) for one in asked.requests])
            encoded = await asyncio.gather(*(asyncio.to_thread(png_base64, image.pixels) for image in made))
        except ApiError as e:
            return error(e)
        return JSONResponse({"created": int(time.time()), "output_format": "png", "size": str(asked.size),
                             "data": [{"b64_json": data, "seed": one.seed}
                                      for data, one in zip(encoded, asked.requests)]})

    async def create_video(request: Request) -> JSONResponse:
        try:
            form = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
            body = await body_of(request, form=True)
            model = await triton.model()
            asked = parse_video_request(body, model, form)
            job = jobs.start(model, asked, lambda a: triton.generate(a.request, model.name), triton.capacity)
        except ApiError as e:
            return error(e)
        return JSONResponse(job.body())

    async def list_videos(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [job.body() for job in jobs.jobs.values()]})

    async def video(request: Request) -> Response:
        video_id = request.path_params["video_id"]
        try:
            if request.method == "DELETE":
                return JSONResponse(jobs.delete(video_id))
            return JSONResponse(jobs.get(video_id).body())
        except ApiError as e:
            return error(e)

    async def video_content(request: Request) -> Response:
        try:
            mp4 = jobs.content(request.path_params["video_id"], request.query_params.get("variant"))
        except ApiError as e:
            return error(e)
        return Response(mp4, media_type="video/mp4")

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "live"})

    async def ready(request: Request) -> JSONResponse:
        if await triton.ready():
            return JSONResponse({"status": "ready"})
        return error(ApiError(503, f"the model {protocol.MODEL} of {server_url} is not ready", code="not_ready"))

    async def http_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, HTTPException)
        return JSONResponse(ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}").body(),
                            e.status_code)

    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        return JSONResponse(ApiError(500, f"{type(e).__name__}: {e}", code="internal_error").body(), 500)

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/images/generations", images, methods=["POST"]),
                             Route("/v1/videos", create_video, methods=["POST"]), Route("/v1/videos", list_videos),
                             Route("/v1/videos/{video_id}", video, methods=["GET", "DELETE"]),
                             Route("/v1/videos/{video_id}/content", video_content),
                             Route("/health/live", live), Route("/health/ready", ready)],
                     exception_handlers={HTTPException: http_error, Exception: unexpected}, lifespan=lifespan)


class Front:
    """The front served by uvicorn in a thread of this process: the caller's main thread keeps its signals (a
    Ctrl-C or SIGTERM there calls stop(), which drains the requests in flight)."""

    def __init__(self, server_url: str, request_timeout_s: float = 600.0) -> None:
        self.app = create_app(server_url, request_timeout_s)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self, host: str, port: int, exit_timeout_s: int = 60, timeout_s: float = 30.0) -> Front:
        import uvicorn

        check_port_free(host, port, option("openai_port"))
        config = uvicorn.Config(self.app, host=host, port=port, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=exit_timeout_s, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="openai-front", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise Failure(f"the OpenAI front did not start on {host}:{port}")
            time.sleep(0.05)
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        return self

    def wait(self) -> None:
        """Block until the front stops by itself (an error of uvicorn's; stop() from another thread)."""
        thread = self._thread
        while thread is not None and thread.is_alive():
            thread.join(1.0)

    def stop(self, exit_timeout_s: float = 60.0) -> None:
        """Stop listening; the requests in flight are answered first (up to exit_timeout_s). A second interrupt
        while they are (a second Ctrl-C) stops it at once."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._server.should_exit = True
        try:
            thread.join(exit_timeout_s + 10)
        except BaseException:
            self._server.force_exit = True
            thread.join(5)
            raise

    def __enter__(self) -> Front:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

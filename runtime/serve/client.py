"""A client of the served pipeline (gRPC, tritonclient): a prompt in, the image and the server's stage timings
out; `ptdit-run --server URL` writes it as the same PNG ptdit-run writes for the folder.

    from runtime.serve.client import PipelineClient
    with PipelineClient("localhost:8001") as client:
        result = client.generate("a red fox in the snow", seed=1)
    result.pixels      # uint8 [H, W, 3]
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ptdit.contract.arguments import checked
from ptdit.contract.cache import check_steps, parse_cache
from ptdit.contract.errors import Failure, InputError, option
from ptdit.contract.numbers import DEFAULT_GUIDANCE, DEFAULT_STEPS, GUIDANCE, SEED, STEPS, Range

from ..run_options import SIDE
from . import protocol
from .server import Ports


@dataclass(frozen=True)
class Generated:
    pixels: np.ndarray  # uint8 [H, W, 3]; a video pipeline's: its frames, [frames, H, W, 3]
    timings: dict[str, float]  # seconds per stage, as the server measured them
    pipeline: str  # the name of the pipeline folder the server runs
    transformer_calls: int | None = None  # the transformer calls the request made (None: the server does not say)


TIMEOUT_S = Range(0, 24 * 3600, low_open=True)  # seconds a request may take


_ADDRESS = re.compile(r"^(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]/]+)):(?P<port>\d{1,5})$")
ADDRESS_FIX = "pass the gRPC address of ptdit-serve run as HOST:PORT, e.g. localhost:8001"


def check_address(url: str) -> str:
    """A server's gRPC address, HOST:PORT (or [IPv6]:PORT), checked before gRPC sees it: gRPC takes an empty or
    misspelled address for a name to resolve, logs its own lines to the terminal and fails late."""
    def refuse(why: str) -> InputError:
        return InputError(f"the server address {url!r} {why}: {ADDRESS_FIX}")

    if not isinstance(url, str) or not url.strip():
        raise refuse("is empty")
    if any(c.isspace() for c in url):
        raise refuse("holds spaces")
    match = _ADDRESS.match(url)
    if match is None:
        raise refuse("has no port" if ":" not in url or url.startswith("[") and "]:" not in url else
                      "is not HOST:PORT")
    if not Ports.RANGE.accepts(int(match["port"])):
        raise refuse(f"has port {match['port']}, outside {Ports.RANGE.low}-{Ports.RANGE.high}")
    return url


def quiet_grpc() -> None:
    """gRPC's C core logs to the terminal (stderr) on its own, before our one-line error says the same: it is
    silenced unless the user asked for its logs (GRPC_VERBOSITY, GRPC_TRACE). Read when grpc is first imported."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def _client(url: str) -> tuple[Any, Any]:
    check_address(url)
    quiet_grpc()
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        raise InputError("talking to a server needs tritonclient: pip install 'tritonclient[grpc]'") from None
    return grpcclient, grpcclient.InferenceServerClient(url)


def request_inputs(grpcclient: Any, prompt: str, negative_prompt: str | None, seed: int, steps: int,
                   guidance_scale: float, height: int | None = None, width: int | None = None,
                   use_resolution_binning: bool = True, cache: str | None = None) -> list[Any]:
    """The request's input tensors, of grpcclient's kind (tritonclient.grpc or tritonclient.grpc.aio)."""
    values: dict[str, object] = {"prompt": prompt.encode(), "seed": seed, "steps": steps,
                                 "guidance_scale": guidance_scale}
    if negative_prompt is not None:
        values["negative_prompt"] = negative_prompt.encode()
    if height is not None or width is not None:  # the server refuses one without the other
        values.update({name: value for name, value in (("height", height), ("width", width)) if value is not None})
    if not use_resolution_binning:
        values["use_resolution_binning"] = False
    if cache is not None:
        values["cache"] = cache.encode()
    inputs = []
    for spec in protocol.INPUTS:
        if spec.name in values:
            tensor = grpcclient.InferInput(spec.name, [1], spec.wire_type)
            tensor.set_data_from_numpy(np.array([values[spec.name]], dtype=spec.dtype))
            inputs.append(tensor)
    return inputs


def read_answer(answer: Any, pipeline: str) -> Generated:
    """The served model's answer (an InferResult) as a Generated."""
    timings = {stage: round(float(answer.as_numpy(f"{stage}_seconds")[0]), 3) for stage in protocol.TIMINGS}
    calls = answer.as_numpy(protocol.CALLS.name)  # None from a server of an earlier version
    video = answer.as_numpy(protocol.VIDEO.name)
    pixels = answer.as_numpy(protocol.IMAGE.name) if video is None else video
    return Generated(pixels, timings, pipeline, None if calls is None else int(calls[0]))


def served_pipeline(config: dict[str, Any]) -> str:
    """The name of the pipeline folder a served model's config (as JSON) says it runs."""
    return str(config.get("parameters", {}).get("pipeline", {}).get("string_value", ""))


def refusal_kind(error: Exception) -> str:
    """What a tritonclient InferenceServerException says happened: "no server" (nothing answers at the address),
    "invalid" (a bad request), "busy" (the queue is full, or the server is not ready or is stopping), "timeout"
    (client_timeout passed), or "failed" (the pipeline failed)."""
    status = str(getattr(error, "status", lambda: "")() or "")
    message = (getattr(error, "message", lambda: "")() or str(error)).lower()
    if "UNAVAILABLE" in status and "failed to connect" in message:
        return "no server"
    if "INVALID_ARG" in status:
        return "invalid"
    if "UNAVAILABLE" in status:
        return "busy"
    if "DEADLINE_EXCEEDED" in status or "deadline exceeded" in message:
        return "timeout"
    return "failed"


class PipelineClient:
    """A connection to the served pipeline, kept for many requests (a context manager). A refused request (a bad
    input, a full queue) is an InputError with the server's message; no server at url is one too. The arguments
    are checked before anything is sent; after close() every call is refused."""

    @checked
    def __init__(self, url: str) -> None:
        self.url = url
        self.closed = False
        self._grpc, self._client = _client(url)
        try:
            config = self._call(lambda: self._client.get_model_config(protocol.MODEL, as_json=True))["config"]
        except BaseException:
            self._client.close()
            raise
        self.pipeline = served_pipeline(config)
        frames = config.get("parameters", {}).get(protocol.FRAMES, {}).get("string_value")
        self.frames = int(frames) if frames else None  # a video pipeline's latent frames; None: an image one

    def _call(self, request: Callable[[], Any]) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return request()
        except InferenceServerException as e:
            kind, message = refusal_kind(e), e.message() or str(e)
            if kind == "no server":
                raise InputError(f"no server answers at {self.url}: start one with ptdit-serve run FOLDER") from None
            if kind in ("invalid", "busy"):
                raise InputError(f"the server refused the request: {message}") from None
            raise Failure(f"the server failed the request: {message}") from None

    @checked
    def generate(self, prompt: str, negative_prompt: str | None = None, seed: int = 0, steps: int = DEFAULT_STEPS,
                 guidance_scale: float = DEFAULT_GUIDANCE, timeout_s: float | None = None, height: int | None = None,
                 width: int | None = None, use_resolution_binning: bool = True,
                 cache: str | None = None) -> Generated:
        """One image; height x width (default: the served folder's first size) as PTDiTPipeline draws it; cache:
        step caching as ptdit-run --cache takes it (default off)."""
        SEED.check(option("seed"), seed)
        STEPS.check(option("steps"), steps)
        GUIDANCE.check(option("guidance_scale"), guidance_scale)
        for name, side in (("height", height), ("width", width)):
            if side is not None:
                SIDE.check(option(name), side)
        if timeout_s is not None:
            TIMEOUT_S.check(option("timeout_s"), timeout_s)
        check_steps(parse_cache(cache), steps)
        inputs = request_inputs(self._grpc, prompt, negative_prompt, seed, steps, guidance_scale, height, width,
                         use_resolution_binning, cache)
        answer = self._call(lambda: self._client.infer(protocol.MODEL, inputs, client_timeout=timeout_s))
        return read_answer(answer, self.pipeline)

    def close(self) -> None:
        """Close the connection; a second close() does nothing, and every other call is refused after it."""
        if not self.closed:
            self.closed = True
            self._client.close()

    def __enter__(self) -> PipelineClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def generate(url: str, prompt: str, negative_prompt: str | None = None, seed: int = 0, steps: int = DEFAULT_STEPS,
             guidance_scale: float = DEFAULT_GUIDANCE, timeout_s: float | None = None, height: int | None = None,
             width: int | None = None, use_resolution_binning: bool = True, cache: str | None = None) -> Generated:
    """One image from the server at url (host:grpc-port), on a connection of its own."""
    with PipelineClient(url) as client:
        return client.generate(prompt, negative_prompt, seed, steps, guidance_scale, timeout_s, height, width,
                               use_resolution_binning, cache)

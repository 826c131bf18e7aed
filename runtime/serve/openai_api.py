"""The OpenAI images API as the front (runtime/serve/openai_front.py) takes it: a request body checked field by field
into the served model's requests, and OpenAI's error body. No server here: what the front forwards is decided,
and refused, before anything reaches Triton.

    POST /v1/images/generations {"prompt": "a red fox", "size": "256x256", "n": 2, "seed": 7}
    -> two requests of the served model, seeds 7 and 8 (the pixels ptdit-run --seed 7 and --seed 8 write)

OpenAI's fields: model, prompt, n, size, response_format (b64_json: the front keeps no files, so it has no honest
`url` to give), output_format (png); user, quality and style are accepted and have no effect. Ours, where OpenAI
has no field: seed, num_inference_steps, guidance_scale, negative_prompt, cache (docs/serving.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptdit.contract.errors import InputError, option
from ptdit.contract.numbers import Range
from ptdit.contract.sizes import Size

from ..pipeline.video_file import FPS
from . import protocol
from .client import served_pipeline

MAX_BODY_BYTES = 1 << 20  # a request is a prompt and a few numbers; the served prompt itself stops at 4 kB
N = Range(1, 10, integer=True)  # images per request, as OpenAI bounds it
FORMAT = "b64_json"
ACCEPTED_UNUSED = ("user", "quality", "style")  # OpenAI fields that choose nothing this model has
# Our names of the served model's inputs where OpenAI's convention (diffusers') names them otherwise.
RENAMED = {"steps": "num_inference_steps"}
PROTOCOL_NAME = {ours: served for served, ours in RENAMED.items()}
EXTENSIONS = ("seed", "num_inference_steps", "guidance_scale", "negative_prompt", "cache")
FIELDS = ("model", "prompt", "n", "size", "response_format", "output_format", *ACCEPTED_UNUSED, *EXTENSIONS)
VIDEO_FIELDS = ("model", "prompt", "size", "seconds", *EXTENSIONS)  # OpenAI's Videos API, less input_reference


class ApiError(Exception):
    """An answer other than 200, as OpenAI's error JSON: {"error": {"message", "type", "param", "code"}}."""

    TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 409: "invalid_request_error",
             413: "invalid_request_error", 415: "invalid_request_error", 503: "server_error", 504: "server_error"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}


def invalid(param: str | None, message: str) -> ApiError:
    shown = message if len(message) <= 300 else f"{message[:300]}..."  # a 4000-digit number is not repeated whole
    return ApiError(400, shown, param, "invalid_value")


@dataclass(frozen=True)
class ServedModel:
    """What the front serves, read from the served model's config: the model id (the pipeline folder's name) and
    the sizes its folder holds, the default first."""

    name: str
    sizes: tuple[Size, ...]
    frames: int | None = None  # a video pipeline's latent frames; None: an image pipeline

    @property
    def clip_frames(self) -> int:
        assert self.frames is not None
        return 1 + 4 * (self.frames - 1)

    @property
    def seconds(self) -> float:
        return self.clip_frames / FPS

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ServedModel:
        parameters = config.get("parameters", {})
        if protocol.SIZES not in parameters:
            raise InputError("the served model's config names no sizes (a repository of an earlier version): "
                             "rewrite it with ptdit-serve repository")
        frames = parameters.get(protocol.FRAMES, {}).get("string_value")
        return cls(served_pipeline(config),
                   protocol.parse_sizes(parameters[protocol.SIZES]["string_value"]), int(frames) if frames else None)


@dataclass(frozen=True)
class ImagesRequest:
    size: Size
    requests: tuple[protocol.Request, ...]  # one per image: seeds seed .. seed + n - 1


def read_json(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object; NaN and Infinity, which JSON has not, are read as numbers so that the
    field holding them is the one named."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, a number of 4300 digits, nesting too deep
        raise ApiError(400, f"the body is not JSON: {str(e)[:200]}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(value).__name__}", code="invalid_json")
    return value


def _typed(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):  # bool is an int to Python, not to JSON
        raise invalid(name, f"'{name}' must be {what}, got {json.dumps(value)[:40]}")
    return value


def _request(body: dict[str, Any], model: ServedModel, size: Size, form: bool = False) -> protocol.Request:
    """The prompt and our extensions as the served model's request at `size`, checked by the served model's own
    checks (one source of their limits). form: the values are a form's text (the SDK's multipart of /v1/videos)."""
    prompt = _typed(body, "prompt", str, "a string")
    if not prompt or not prompt.strip():
        raise invalid("prompt", "'prompt' is missing or empty: send the text to draw")
    values: dict[str, np.ndarray] = {"prompt": np.array([_utf8("prompt", prompt)], dtype=object),
                                     "height": np.array([size.height], dtype=np.int32),
                                     "width": np.array([size.width], dtype=np.int32)}
    for field, kind, what in (("seed", int, "an integer"), ("num_inference_steps", int, "an integer"),
                              ("guidance_scale", (int, float), "a number"),
                              ("negative_prompt", str, "a string"), ("cache", str, "a string")):
        if form and kind is not str and isinstance(body.get(field), str):
            body = {**body, field: _number(field, body[field], float if kind is not int else int)}
        value = _typed(body, field, kind, what)
        if value is None:
            continue
        spec = next(t for t in protocol.INPUTS if t.name == PROTOCOL_NAME.get(field, field))
        if isinstance(value, str):
            values[spec.name] = np.array([_utf8(field, value)], dtype=spec.dtype)
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid(field, f"'{field}' must be a finite number, got {value}")
        try:  # before numpy holds it: a number past the input's type is a range error, not an overflow
            protocol.RANGES[spec.name].check(option(field), value)
        except InputError as e:
            raise invalid(field, str(e)) from None
        values[spec.name] = np.array([value], dtype=spec.dtype)
    try:
        return protocol.parse_request(values)
    except InputError as e:
        renamed = e.renamed(RENAMED)
        raise invalid(_named(renamed), str(renamed)) from None


def _utf8(field: str, text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # JSON's "\ud800": a lone surrogate, which no UTF-8 holds
        raise invalid(field, f"'{field}' is not valid Unicode text (it holds a lone surrogate)") from None


def _number(field: str, text: str, kind: type) -> int | float:
    try:
        return int(text) if kind is int else float(text)
    except ValueError:
        raise invalid(field, f"'{field}' must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def _check_fields(body: dict[str, Any], fields: tuple[str, ...], model: ServedModel) -> None:
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise invalid(unknown[0], f"unknown field '{unknown[0]}': this endpoint takes {', '.join(fields)}")
    name = _typed(body, "model", str, "a string")
    if name is not None and name != model.name:
        raise ApiError(404, f"the model '{name}' is not served here; this server serves '{model.name}' "
                            f"(GET /v1/models)", "model", "model_not_found")


def parse_images_request(body: dict[str, Any], model: ServedModel) -> ImagesRequest:
    """The body's images as requests of the served model; an ApiError (400) names the first bad field."""
    if model.frames is not None:
        raise ApiError(400, f"'{model.name}' is a video pipeline: POST /v1/videos", code="wrong_endpoint")
    _check_fields(body, FIELDS, model)
    n = _typed(body, "n", int, "an integer")
    n = 1 if n is None else n
    if not N.accepts(n):
        raise invalid("n", f"'n' must be {N.describe()}, got {n}")
    size = _size(body, model)
    response_format = _typed(body, "response_format", str, "a string")
    if response_format not in (None, FORMAT):
        raise invalid("response_format", f"'response_format' {response_format!r} is not served: the front keeps no "
                                         f"files to give a url of; ask for {FORMAT!r}")
    output_format = _typed(body, "output_format", str, "a string")
    if output_format not in (None, "png"):
        raise invalid("output_format", f"'output_format' {output_format!r} is not served: the images are png")
    for field in ACCEPTED_UNUSED:
        _typed(body, field, str, "a string")
    first = _request(body, model, size)
    last = first.seed + n - 1
    if not protocol.RANGES["seed"].accepts(last):
        raise invalid("seed", f"'seed' + 'n' - 1 is {last}, past the last seed, {protocol.RANGES['seed'].high}")
    requests = tuple(protocol.Request(**{**first.__dict__, "seed": first.seed + i}) for i in range(n))
    return ImagesRequest(size, requests)


@dataclass(frozen=True)
class VideoRequest:
    request: protocol.Request
    size: Size
    size_given: bool  # ptdit-run's clip names its size only where the user gave one: so does the front's


def parse_video_request(body: dict[str, Any], model: ServedModel, form: bool) -> VideoRequest:
    """A POST /v1/videos body (JSON, or the form the SDK sends) as the served model's request."""
    if model.frames is None:
        raise ApiError(400, f"'{model.name}' is an image pipeline: POST /v1/images/generations",
                       code="wrong_endpoint")
    if "input_reference" in body:
        raise invalid("input_reference", "'input_reference' is not served: the model draws from text alone")
    _check_fields(body, VIDEO_FIELDS, model)
    seconds = body.get("seconds")
    if seconds is not None:
        value = _number("seconds", seconds, float) if isinstance(seconds, str) else seconds
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1e9 < value < 1e9 or \
                abs(value - model.seconds) > 0.005:  # -1e9 < nan is False
            raise invalid("seconds", f"'seconds' {seconds!r} is not served: this model's clips are "
                                     f"{model.clip_frames} frames at {FPS} fps, {model.seconds:.2f} s; leave it out")
    size = _size(body, model)
    return VideoRequest(_request(body, model, size, form), size, body.get("size") not in (None, "auto"))


def _size(body: dict[str, Any], model: ServedModel) -> Size:
    text = _typed(body, "size", str, 'a string "WIDTHxHEIGHT"')
    if text is None or text == "auto":
        return model.sizes[0]
    served = {str(size): size for size in model.sizes}
    if text not in served:
        raise invalid("size", f"'size' {text!r} is not served: this model draws {', '.join(served)} "
                              f"(WIDTHxHEIGHT)")
    return served[text]


def _named(error: InputError) -> str | None:
    """The first parameter an InputError names (its template marks each one)."""
    marker = error.template.split("\x1f")
    return marker[1].split("\x1e")[0] if len(marker) > 2 else None

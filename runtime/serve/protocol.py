"""The served model's inputs and outputs: the one definition the repository's config, the model inside Triton and
the client all read. Numpy only (it runs inside the server's Python, numpy 1.26 there)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ptdit.contract.cache import check_steps, parse_cache
from ptdit.contract.errors import InputError, option
from ptdit.contract.numbers import DEFAULT_GUIDANCE, DEFAULT_STEPS, GUIDANCE, SEED, STEPS, Range
from ptdit.contract.sizes import Size, parse_size
from ptdit.contract.triton_config import TRITON_TYPES, wire_type

from ..run_options import SIDE

MODEL = "ptdit"
MAX_PROMPT_BYTES = 4096  # far above what T5 reads (its first L tokens); a bigger prompt is a mistake or an attack


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # numpy's ("object": Triton's BYTES)
    optional: bool = False
    default: object = None

    @property
    def triton_type(self) -> str:  # the config's data_type
        return TRITON_TYPES[self.dtype]

    @property
    def wire_type(self) -> str:  # the datatype a client sends
        return wire_type(self.triton_type)


INPUTS = (
    Tensor("prompt", "object"),
    Tensor("negative_prompt", "object", optional=True),
    Tensor("seed", "int64", optional=True, default=0),
    Tensor("steps", "int32", optional=True, default=DEFAULT_STEPS),
    Tensor("guidance_scale", "float32", optional=True, default=DEFAULT_GUIDANCE),
    Tensor("height", "int32", optional=True),  # absent: the folder's first size
    Tensor("width", "int32", optional=True),
    Tensor("use_resolution_binning", "bool", optional=True, default=True),
    Tensor("cache", "object", optional=True),  # step caching as ptdit-run --cache takes it; absent: off
)
BINNING = next(t for t in INPUTS if t.name == "use_resolution_binning")
TIMINGS = ("encode", "sample", "decode")  # seconds, each an FP32 [1] output named <stage>_seconds
IMAGE = Tensor("image", "uint8")  # [H, W, 3]: an image folder's
VIDEO = Tensor("video", "uint8")  # [frames, H, W, 3]: a video folder's, its 1 + 4 (F - 1) frames
CALLS = Tensor("transformer_calls", "int32")  # [1]: the transformer calls the request made (caching skips some)
OUTPUTS = (IMAGE, *(Tensor(f"{stage}_seconds", "float32") for stage in TIMINGS), CALLS)  # a video folder: VIDEO first
FRAMES = "frames"  # the config's parameter of a video folder: its latent frames
SIZES = "sizes"  # the config's parameter naming the folder's sizes, WxH, comma-separated, the default first


def sizes_text(sizes: Sequence[Size]) -> str:
    return ",".join(map(str, sizes))


def parse_sizes(text: str) -> tuple[Size, ...]:
    return tuple(parse_size(part, SIZES) for part in text.split(",") if part)


RANGES: dict[str, Range] = {"seed": SEED, "steps": STEPS, "guidance_scale": GUIDANCE, "height": SIDE, "width": SIDE}


@dataclass(frozen=True)
class Request:
    prompt: str
    negative_prompt: str | None
    seed: int
    steps: int
    guidance_scale: float
    height: int | None = None
    width: int | None = None
    use_resolution_binning: bool = True
    cache: str | None = None


def parse_request(values: Mapping[str, np.ndarray]) -> Request:
    """A request's input arrays (name -> array of shape [1]; optional ones may be missing) as checked values;
    an InputError names the input and what it takes. Triton itself refuses a wrong datatype or a missing
    required input before the model sees the request."""
    def one(name: str) -> object:
        array = np.asarray(values[name])
        if array.shape != (1,):
            raise InputError(f"{option(name)} must have shape [1], got {list(array.shape)}")
        return array.reshape(-1)[0]

    def text(name: str) -> str | None:
        if name not in values:
            return None
        raw = one(name)
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        if len(data) > MAX_PROMPT_BYTES:
            raise InputError(f"{option(name)} is {len(data)} bytes; the server takes at most {MAX_PROMPT_BYTES} "
                             f"(the text encoder reads only its first tokens)")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{option(name)} is not UTF-8 text") from None

    prompt = text("prompt")
    if prompt is None:
        raise InputError(f"{option('prompt')} is missing: send the text to draw")
    numbers: dict[str, float | None] = {}
    for spec in (t for t in INPUTS if t.name in RANGES):
        if spec.name not in values and spec.default is None:
            numbers[spec.name] = None
            continue
        value = np.asarray(one(spec.name) if spec.name in values else spec.default)
        number = int(value) if spec.dtype.startswith("int") else float(value)
        numbers[spec.name] = RANGES[spec.name].check(option(spec.name), number)
    binning = bool(one("use_resolution_binning") if "use_resolution_binning" in values else BINNING.default)

    def integer(name: str) -> int | None:
        value = numbers[name]
        return None if value is None else int(value)

    cache = text("cache")
    check_steps(parse_cache(cache), int(numbers["steps"] or 0))
    return Request(prompt, text("negative_prompt"), int(numbers["seed"] or 0), int(numbers["steps"] or 0),
                   float(numbers["guidance_scale"] or 0.0), integer("height"), integer("width"), binning, cache)

"""PTDiTPipeline: prompt to image from Python, in the conventions of diffusers.

    from runtime import PTDiTPipeline

    with PTDiTPipeline.from_folder("artifacts/ptdit-tiny-256-pipeline", backend="onnxruntime") as pipe:
        out = pipe("a red fox in the snow", num_inference_steps=30, guidance_scale=4.0, seed=1)
    out.images[0].save("fox.png")

    with PTDiTPipeline.from_folder("artifacts/ptdit-tiny-256-f8-pipeline") as pipe:  # a video folder (--frames 8)
        clip = pipe("a red fox running in the snow", num_inference_steps=30, seed=1).frames[0]  # 29 PIL images

A pipeline folder (ptdit-export --pipeline) runs prompt -> T5 -> PT-DiT -> CausalVAE; a transformer artifact
alone (an .onnx or .plan, noise-prediction or step graph: PTDiTPipeline.from_artifact) takes text features
(`prompt_embeds`) and gives latents. Errors name this API's parameters (num_inference_steps, prompt_embeds...).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Literal, Sequence, Union

import numpy as np

from ptdit.contract.arguments import checked
from ptdit.contract.cache import CacheSpec, check_steps, parse_cache
from ptdit.contract.errors import InputError, option
from ptdit.contract.numbers import DEFAULT_GUIDANCE, DEFAULT_STEPS, GUIDANCE, SEED, STEPS, Range
from ptdit.contract.sizes import Size

from ..backends.interface import Session
from ..backends.tensorrt.flavour import TensorRTOptions
from ..run_options import SESSION
from ..sampling.caching import CacheSettings
from ..sampling.step_sampler import make_sampler
from ..sampling.text import TextConditioning, make_conditioning
from ..session import open_session
from .folder import load_pipeline
from .output import PTDiTPipelineOutput
from .sizes import choose_size, fit_array, fit_image
from .text_to_image import PipelineComponents
from .tiling import to_uint8, to_unit

OutputType = Literal["pil", "np", "latent"]
OUTPUT_TYPES = ("pil", "np", "latent")
IMAGES_PER_PROMPT = Range(1, 1000, integer=True)
# The lower layers' parameter names -> this API's (their errors are raised again in these terms).
API_NAMES = {"steps": "num_inference_steps", "guidance": "guidance_scale", "text": "prompt_embeds",
             "negative_text": "negative_prompt_embeds"}
COMMAND_NAMES = {api: lower for lower, api in API_NAMES.items()}  # back, for a command that calls this API
# (step index, timestep, latent [1, C, H, W] (video [1, C, F, H, W]) after it)
StepCallback = Callable[[int, float, np.ndarray], None]
Prompts = Union[str, Sequence[str]]


class PTDiTPipeline:
    """Prompt (or text features) to images (or latents), on any backend; a context manager that closes its
    sessions. Build one with from_folder (a pipeline folder) or from_artifact (a transformer .onnx / .plan)."""

    def __init__(self, transformer: Session, components: PipelineComponents | None = None, cache: str | None = None):
        """`cache`: the step caching of every call that does not name its own (default off; docs/caching.md)."""
        self.transformer, self.components, self.cache = transformer, components, cache
        self.closed = False
        self.caching = CacheSettings(components.folder.path if components else transformer.artifact.path)
        try:
            parse_cache(cache)
            if transformer.artifact.export.resolution is None:
                raise InputError(f"{transformer.artifact.path.name} is a {transformer.artifact.export.graph} "
                                 f"artifact; PTDiTPipeline runs the transformer of ptdit-export")
            spec = transformer.artifact.spec("text_embeds")
        except BaseException:
            self.close()
            raise
        self.text_len, self.text_dim = spec.shape[1], spec.shape[2]

    @classmethod
    @checked(options=SESSION)
    def from_folder(cls, folder: str | Path, backend: Any = None, device: Any = None, verify: Any = None,
                    runtime_cache_dir: Any = None, lean_runtime: Any = None, weight_budget: Any = None,
                    torch_precision: str | None = None, cache: str | None = None) -> PTDiTPipeline:
        """A pipeline folder written by ptdit-export --pipeline. backend: auto / onnxruntime / torch, or tensorrt
        with a plan of each component built into the folder by ptdit-build; device: auto / cpu / cuda (ONNX
        Runtime and torch); verify: check every file's sha256 against pipeline.json first; the TensorRT options
        are those of ptdit-run (runtime cache folder, lean runtime, weight-streaming budget in bytes); cache: the
        calls' step caching unless a call names its own (ptdit-run --cache's; default off)."""
        parse_cache(cache)  # before any file is opened
        path = Path(folder)
        if path.is_file():
            raise InputError(f"{path} is a file: a pipeline folder is a directory written by ptdit-export "
                             f"--pipeline; for a transformer .onnx or .plan use PTDiTPipeline.from_artifact")
        tensorrt = TensorRTOptions.of({"runtime_cache_dir": runtime_cache_dir, "lean_runtime": lean_runtime,
                                       "weight_budget": weight_budget})
        components = PipelineComponents(load_pipeline(path, verify), backend, device, verify, tensorrt, torch_precision)
        return cls(components.transformer(components.sizes[0]), components, cache)

    @classmethod
    def from_components(cls, components: PipelineComponents) -> PTDiTPipeline:
        """A pipeline on components opened otherwise (a served pipeline's, whose sessions call Triton models)."""
        return cls(components.transformer(components.sizes[0]), components)

    @classmethod
    @checked(options=SESSION)
    def from_artifact(cls, artifact: str | Path, backend: Any = None, device: Any = None, verify: Any = None,
                      runtime_cache_dir: Any = None, lean_runtime: Any = None, weight_budget: Any = None,
                      torch_precision: str | None = None, cache: str | None = None) -> PTDiTPipeline:
        """A transformer artifact alone (.onnx or .plan with its manifest; a step graph too): text features in,
        latents out. The options are from_folder's."""
        parse_cache(cache)
        path = Path(artifact)
        if path.is_dir():
            raise InputError(f"{path} is a folder: use PTDiTPipeline.from_folder for a pipeline folder")
        tensorrt = TensorRTOptions.of({"runtime_cache_dir": runtime_cache_dir, "lean_runtime": lean_runtime,
                                       "weight_budget": weight_budget})
        return cls(open_session(str(path), backend, device, verify, torch_precision, tensorrt), cache=cache)

    @checked
    def encode_prompt(self, prompt: str, name: str = "prompt") -> tuple[np.ndarray, np.ndarray]:
        """The T5 features [L, D] (float32) and mask [L] (int64) of `prompt`, as the pipeline feeds them (`name`: the
        parameter it came in, for the error without a text encoder)."""
        if self.components is None:
            raise InputError(f"{option(name)} needs a text encoder, and {self.transformer.artifact.path.name} is a "
                             f"transformer artifact alone: pass {option(name + '_embeds')}, or use a pipeline folder")
        return self.components.encode(prompt)

    @checked
    def __call__(self, prompt: Prompts | None = None, negative_prompt: Prompts | None = None,
                 num_inference_steps: int = DEFAULT_STEPS, guidance_scale: float = DEFAULT_GUIDANCE, seed: int = 0,
                 num_images_per_prompt: int = 1, prompt_embeds: np.ndarray | None = None,
                 prompt_attention_mask: np.ndarray | None = None, negative_prompt_embeds: np.ndarray | None = None,
                 negative_prompt_attention_mask: np.ndarray | None = None, output_type: OutputType | None = None,
                 shift: float | None = None, callback_on_step_end: StepCallback | None = None,
                 on_tile: Callable[[], None] | None = None, height: int | None = None, width: int | None = None,
                 use_resolution_binning: bool = True, cache: str | None = None) -> PTDiTPipelineOutput:
        """Sample one image per prompt and per `num_images_per_prompt`; image i of the call (prompt-major)
        starts from the noise of `seed + i`, so the first is the image ptdit-run --seed gives.

        prompt: a string or a list of strings (a pipeline folder), or prompt_embeds: T5 features [n, L, D] or
        [L, D] with prompt_attention_mask [n, L] or [L] (default: all ones). negative_prompt (default: the
        folder's stored empty prompt) or negative_prompt_embeds / negative_prompt_attention_mask (default
        without a text encoder: zero features with one unmasked token). output_type: "pil" (the default with a
        VAE decoder), "np" or "latent" (the default, and the only one, for a transformer artifact alone).
        shift: the timestep shift (default: the published sqrt(H W) / 512, for video times sqrt(pixel_frames // 17 * 5),
        ptdit.contract.schedule.timestep_shift). callback_on_step_end(step, timestep, latent) is called after each
        step (with a step graph, each call copies the latent to the host); on_tile() after each VAE tile decoded.
        A video folder gives .frames in place of .images, decoded chunk by chunk (one chunk's pixels in float at a
        time). height, width (multiples of 8; default: the folder's first size): a size the folder holds is drawn
        as it is; with use_resolution_binning (the default) any other is drawn at the folder's size nearest in
        aspect ratio, then resized and centre-cropped to exactly height x width (latents stay at the size drawn);
        without it, a size the folder does not hold is refused. cache: step caching, as ptdit-run --cache takes it
        (every:N, calibrated:THRESHOLD, default, off; docs/caching.md), default: the pipeline's (off unless it was
        made with one); .transformer_calls counts the calls made."""
        try:
            size = self.size_for(height, width, use_resolution_binning)
            return self._call(prompt, negative_prompt, num_inference_steps, guidance_scale, seed,
                              num_images_per_prompt, prompt_embeds, prompt_attention_mask, negative_prompt_embeds,
                              negative_prompt_attention_mask, output_type, shift, callback_on_step_end, on_tile, size,
                              parse_cache(self.cache if cache is None else cache))
        except InputError as e:
            raise e.renamed(API_NAMES) from None

    @property
    def sizes(self) -> tuple[Size, ...]:
        """The image sizes this pipeline draws at, the default first."""
        if self.components is not None:
            return self.components.sizes
        size = self.transformer.artifact.export.image_size
        assert size is not None  # __init__: a transformer's
        return (size,)

    def size_for(self, height: int | None, width: int | None, binning: bool) -> tuple[Size, Size]:
        """(the size drawn, the size given back) for height x width."""
        if self.components is None and (height, width) != (None, None):
            choose_size(self.sizes, height, width, True)  # the values' own checks
            if Size(height or 0, width or 0) not in self.sizes:
                raise InputError(f"{self.transformer.artifact.path.name} draws latents of {self.sizes[0]} only: pass "
                                 f"that size, or none, or use a pipeline folder of the size")
        drawn = choose_size(self.sizes, height, width, binning)
        return drawn, drawn if height is None or width is None else Size(height, width)

    def _call(self, prompt: Prompts | None, negative_prompt: Prompts | None, steps: int, guidance: float, seed: int,
              per_prompt: int, prompt_embeds: np.ndarray | None, prompt_mask: np.ndarray | None,
              negative_embeds: np.ndarray | None, negative_mask: np.ndarray | None, output_type: OutputType | None,
              shift: float | None, callback: StepCallback | None, on_tile: Callable[[], None] | None,
              size: tuple[Size, Size], cache: CacheSpec | None) -> PTDiTPipelineOutput:
        output_type = output_type or ("pil" if self.components else "latent")
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"{option('output_type')} must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if output_type != "latent" and self.components is None:
            raise InputError(f"{option('output_type', output_type)} needs a VAE decoder, and "
                             f"{self.transformer.artifact.path.name} is a transformer artifact alone: pass "
                             f"{option('output_type', 'latent')}, or use a pipeline folder")
        STEPS.check(option("steps"), steps)
        GUIDANCE.check(option("guidance"), guidance)
        IMAGES_PER_PROMPT.check(option("num_images_per_prompt"), per_prompt)
        SEED.check(option("seed"), seed)
        drawn, wanted = size
        transformer = self.transformer  # the session this pipeline was made with, at its size; another size's:
        if self.components is not None and drawn != transformer.artifact.export.image_size:
            transformer = self.components.transformer(drawn)
        check_steps(cache, steps)  # before any work, as what follows
        caching = self.caching.sampler_args(cache, transformer.artifact)
        timings = {"encode": 0.0, "sample": 0.0, "decode": 0.0}
        start = time.perf_counter()
        texts = self._conditioning(prompt, negative_prompt, prompt_embeds, prompt_mask, negative_embeds,
                                   negative_mask)
        timings["encode"] = time.perf_counter() - start
        count = len(texts) * per_prompt
        SEED.check(f"{option('seed')} + the number of images - 1", seed + count - 1)
        latents, decoded, calls = [], [], 0
        for i in range(count):
            start = time.perf_counter()
            sampled = make_sampler(transformer, steps, guidance, seed + i, shift, **caching).sample(
                texts[i // per_prompt], on_latent=callback)
            timings["sample"] += time.perf_counter() - start
            latents.append(sampled.latent)
            calls += sampled.transformer_calls
            if output_type != "latent":
                assert self.components is not None
                start = time.perf_counter()
                decoded.append(self._decode(sampled.latent, output_type, on_tile, wanted))
                timings["decode"] += time.perf_counter() - start
        backends = ({name: s.backend for name, s in self.components.sessions.items()} if self.components
                    else {"transformer": self.transformer.backend})
        pictures: list[Any] | np.ndarray | None = None
        if output_type == "pil":
            pictures = decoded
        elif output_type == "np":
            pictures = np.stack(decoded)
        video = self.components is not None and self.components.is_video
        return PTDiTPipelineOutput(None if video else pictures, np.concatenate(latents),
                                   {k: round(v, 3) for k, v in timings.items()}, backends,
                                   frames=pictures if video else None, transformer_calls=calls)

    def _decode(self, latent: np.ndarray, output_type: OutputType, on_tile: Callable[[], None] | None,
                size: Size) -> Any:
        """One latent's picture, fitted to `size`: a PIL image or float [H, W, 3] in [0, 1]; for a video, its list of
        PIL frames or float [frames, H, W, 3], converted chunk by chunk as the decoder gives them (NaN and inf
        refused)."""
        assert self.components is not None
        video = self.components.is_video
        if output_type == "np":
            if not video:
                return fit_array(to_unit(self.components.decode(latent, on_tile)), size)
            return np.concatenate([fit_array(to_unit(chunk), size)
                                   for chunk in self.components.decode_video(latent, on_tile)])
        from PIL import Image as PILImage

        if not video:
            return fit_image(PILImage.fromarray(to_uint8(self.components.decode(latent, on_tile)), "RGB"), size)
        return [fit_image(PILImage.fromarray(frame, "RGB"), size)
                for chunk in self.components.decode_video(latent, on_tile) for frame in to_uint8(chunk)]

    def _conditioning(self, prompt: Prompts | None, negative_prompt: Prompts | None, embeds: np.ndarray | None,
                      mask: np.ndarray | None, negative_embeds: np.ndarray | None,
                      negative_mask: np.ndarray | None) -> list[TextConditioning]:
        """One (cond, uncond) pair per prompt."""
        if (prompt is None) == (embeds is None):
            which = "not both" if embeds is not None else "one of them"
            raise InputError(f"pass {option('prompt')} or {option('prompt_embeds')}, {which}")
        if negative_prompt is not None and negative_embeds is not None:
            raise InputError(f"pass {option('negative_prompt')} or {option('negative_prompt_embeds')}, not both")
        for given, name, owner in ((mask, "prompt_attention_mask", "prompt_embeds"),
                                   (negative_mask, "negative_prompt_attention_mask", "negative_prompt_embeds")):
            if given is not None and (embeds if owner == "prompt_embeds" else negative_embeds) is None:
                raise InputError(f"{option(name)} goes with {option(owner)}: drop it, or pass the features too")
        if embeds is not None:
            conds = _features(embeds, mask, "prompt_embeds", "prompt_attention_mask")
            sources = [f"prompt_embeds[{i}]" for i in range(len(conds))]
        else:
            assert prompt is not None
            prompts = _prompts(prompt, "prompt")
            conds = [self.encode_prompt(p) for p in prompts]
            sources = [f"prompt {p!r}" for p in prompts]
        uncond: list[tuple[np.ndarray, np.ndarray] | None]
        if negative_embeds is not None:
            uncond = list(_features(negative_embeds, negative_mask, "negative_prompt_embeds",
                                    "negative_prompt_attention_mask"))
        elif negative_prompt is not None:
            negatives = _prompts(negative_prompt, "negative_prompt")
            uncond = [self.encode_prompt(p, "negative_prompt") for p in negatives]
        elif self.components is not None:
            uncond = [self.components.negative(None)]
        else:
            uncond = [None]
        if len(uncond) == 1:
            uncond = uncond * len(conds)
        if len(uncond) != len(conds):
            raise InputError(f"{len(uncond)} negative prompts for {len(conds)} prompts: pass one, or one per prompt")
        names = ("prompt_embeds" if embeds is not None else "prompt",
                 "negative_prompt_embeds" if negative_embeds is not None else "negative_prompt")
        texts = []
        for cond, negative, source in zip(conds, uncond, sources):
            pair = (cond[0][None], cond[1][None])
            negative_pair = None if negative is None else (negative[0][None], negative[1][None])
            texts.append(make_conditioning(self.text_len, self.text_dim, pair, negative_pair, source=source,
                                           names=names))
        return texts

    def close(self) -> None:
        """Release every session; a second close() does nothing, and every other call is refused after it."""
        self.closed = True
        if self.components is not None:
            self.components.close()
        else:
            self.transformer.close()

    def __enter__(self) -> PTDiTPipeline:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _prompts(value: Prompts, name: str) -> list[str]:
    prompts = [value] if isinstance(value, str) else list(value)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InputError(f"{option(name)} must be a string or a non-empty list of strings, got {value!r}")
    return prompts


def _features(embeds: np.ndarray, mask: np.ndarray | None, name: str,
              mask_name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Features [L, D] or [n, L, D] and mask [L] / [n, L] (default all ones) -> n (features, mask) pairs."""
    values = np.asarray(embeds)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3 or not np.issubdtype(values.dtype, np.floating):
        raise InputError(f"{option(name)} must be float features [L, D] or [n, L, D], got {values.dtype} "
                         f"{list(np.shape(embeds))}")
    n, length = values.shape[:2]
    masks = np.ones((n, length), np.int64) if mask is None else np.asarray(mask)
    if masks.ndim == 1 and masks.size == length:  # one mask for every prompt
        masks = np.broadcast_to(masks, (n, length))
    if masks.size != n * length or not (np.issubdtype(masks.dtype, np.integer) or masks.dtype == bool):
        raise InputError(f"{option(mask_name)} must be integers [L] or [n, L] for {option(name)} "
                         f"{list(values.shape)}, got {masks.dtype} {list(masks.shape)}")
    masks = masks.reshape(n, length).astype(np.int64)
    return [(values[i].astype(np.float32), masks[i]) for i in range(n)]

"""ptdit-run: sample latents from an artifact with the rectified-flow Euler sampler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ptdit.contract.cache import check_steps, parse_cache
from ptdit.contract.cli_types import Console, artifact_argument, command_options, declared_options
from ptdit.contract.cli_types import given as given_flags
from ptdit.contract.commands import exit_codes
from ptdit.contract.errors import InputError
from ptdit.contract.options import Option, Options
from ptdit.contract.outputs import Outputs

from ..backends.tensorrt.flavour import TensorRTOptions
from ..pipeline.output import pipeline_metadata
from ..run_options import IMAGE_SIZE, SAMPLING, SESSION, TENSORRT_RUN
from .options import check_out

EXAMPLES = """\b
Examples:
  ptdit-run artifacts/ptdit-xl-1024-b2-fp16-sm90-trt10.13.plan --text prompt.safetensors \\
            --steps 30 --cfg 4.0 --seed 7 --out latents.npy
  ptdit-run artifacts/ptdit-tiny-256-b2-fp16.onnx --random-text --steps 4 --out /tmp/l.npy
  ptdit-run model.onnx --backend torch --random-text --out ref.safetensors   (the PyTorch reference)

\b
  ptdit-run artifacts/ptdit-tiny-256-pipeline --prompt "a red fox" --out fox.png
      a pipeline folder (ptdit-export --pipeline): prompt in, PNG out, per-stage timings
  ptdit-run artifacts/ptdit-tiny-1408x768+768x1408-pipeline --prompt "a fox" --height 720 --width 1280 --out fox.png
      any size: drawn at the folder's size nearest in aspect ratio, resized and centre-cropped to 1280 x 720
  ptdit-run --server localhost:8001 --prompt "a red fox" --out fox.png
      the same on a server of ptdit-serve run (gRPC): the same PNG for the same seed
  ptdit-run artifacts/ptdit-tiny-256-f8-pipeline --prompt "a red fox running" --out fox.mp4
      a video pipeline folder (ptdit-export --pipeline --frames 8): 29 frames at 24 fps; also .webp (lossless),
      .gif, or a path without a suffix: a folder of PNG frames

A transformer artifact alone takes T5 features: --text ([L, 4096] .npy, or .npz/.safetensors with
text_embeds and text_mask); --negative-text the unconditional ones (default: zeros, one token).
--random-text uses seeded Gaussian features, for pipeline tests.
"""


RUN = SESSION.only("backend", "device") + SAMPLING + Options(
    Option("text", Path | None, None, "Text features file.", kind="path"),
    Option("negative_text", Path | None, None, "Unconditional text features file.", kind="path"),
    Option("random_text", bool, False, "Seeded Gaussian text features (pipeline tests)."),
    Option("server", str | None, None, "Draw --prompt on this server of ptdit-serve run (its gRPC address), in place "
           "of ARTIFACT.", metavar="HOST:PORT"),
    Option("prompt", str | None, None, "A pipeline folder: the text to draw."),
    Option("negative_prompt", str | None, None, "A pipeline folder: the negative prompt [default: \"\"]."),
    Option("out", Path, None, "Latents: .npy or .safetensors; for a pipeline folder the image, .png; for a video "
           "pipeline .mp4, .webp, .gif, or a folder of PNG frames (no suffix).", kind="path", required=True),
    Option("force", bool, False, "Overwrite --out."),
) + IMAGE_SIZE + SESSION.without("backend", "device")


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@artifact_argument("an .onnx or .plan (with its manifest), or a pipeline folder (ptdit-export --pipeline)",
                   unless="server")
@declared_options(RUN)
@command_options()
def main(artifact: Path | None, backend: str, device: str, steps: int, guidance: float, seed: int,
         shift: float | None, text: Path | None, negative_text: Path | None, random_text: bool,
         server: str | None, prompt: str | None, negative_prompt: str | None, out: Path, force: bool,
         height: int | None, width: int | None, use_resolution_binning: bool, cache: str | None, verify: bool,
         as_json: bool, debug: bool, console: Console, **tensorrt_run: Any) -> None:
    """Sample a latent from ARTIFACT, an ONNX or TensorRT artifact (rectified-flow Euler with classifier-free
    guidance), or an image from ARTIFACT, a pipeline folder (prompt, T5, the transformer, the CausalVAE decoder,
    a PNG); a video pipeline folder gives a clip (.mp4, .webp, .gif or a folder of PNG frames).

    Progress goes to stderr (a bar on a terminal; -v: every step, -q: nothing); the latent (or the image) is
    written to --out. The sampler is the same whichever backend runs the model.
    """
    with exit_codes("ptdit-run", debug, flags=RUN.flags()):
        check_steps(parse_cache(cache), steps)  # before any work
        options = TensorRTOptions.of(tensorrt_run)
        text_path, negative_path, out_path = text, negative_text, out
        if artifact is None:
            assert server is not None  # artifact_argument: --server in its place
            local = ["text", "negative_text", "random_text", "shift", *TENSORRT_RUN.names(), "verify",
                     *(name for name, value in (("backend", backend), ("device", device)) if value != "auto")]
            given = given_flags(click.get_current_context(), local)
            if given:
                raise InputError(f"{', '.join(given)} {'apply' if len(given) > 1 else 'applies'} to a local run; "
                                 f"the server runs its own pipeline: drop {'them' if len(given) > 1 else 'it'}")
            summary = run_on_server(server, prompt, negative_prompt, steps, guidance, seed, out_path, force, console,
                                    height, width, use_resolution_binning, cache)
        elif artifact.is_dir():
            if text_path or negative_path or random_text:
                raise InputError("a pipeline folder takes --prompt (and --negative-prompt), not text features")
            summary = run_pipeline(artifact, prompt, negative_prompt, backend, device, steps, guidance, seed, shift,
                                   out_path, force, verify, options, console, height, width, use_resolution_binning,
                                   cache)
        else:
            given = [flag for flag, value in (("--prompt", prompt), ("--negative-prompt", negative_prompt))
                     if value is not None] + given_flags(click.get_current_context(), IMAGE_SIZE.names())
            if given:
                raise InputError(f"{' and '.join(given)} {'need' if len(given) > 1 else 'needs'} a pipeline folder "
                                 f"(ptdit-export --pipeline); {artifact.name} takes text features: --text FILE (and "
                                 f"--negative-text FILE) or --random-text")
            summary = run(artifact, backend, device, steps, guidance, seed, shift, text_path, negative_path,
                          random_text, out_path, force, verify, options, console, cache)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif "video" in summary:
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in summary["seconds"].items())
        frames, height, width = summary["video"][:3]
        click.echo(f"wrote {summary['out']} ({frames} frames, {width} x {height}, {summary['fps']} fps): {stages}")
    elif "image" in summary:
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in summary["seconds"].items())
        calls = (f", {summary['transformer_calls']} transformer calls"
                 if summary["cache"] != "off" and summary["transformer_calls"] is not None else "")
        click.echo(f"wrote {summary['out']} ({summary['image'][1]} x {summary['image'][0]}): {stages}{calls}")
    else:
        calls = (f", {summary['transformer_calls']} transformer calls"
                 if summary["cache"] != "off" and summary["transformer_calls"] is not None else "")
        click.echo(f"wrote {summary['out']}: {summary['steps']} steps in {summary['seconds']:.2f} s "
                   f"({summary['ms_per_step']:.1f} ms/step{calls}) on {summary['backend']}")


def run_on_server(url: str, prompt: str | None, negative_prompt: str | None, steps: int, guidance: float, seed: int,
                  out_path: Path, force: bool, console: Console | None = None, height: int | None = None,
                  width: int | None = None, use_resolution_binning: bool = True,
                  cache: str | None = None) -> dict[str, Any]:
    """The image (or a video pipeline's clip) of the pipeline a server of ptdit-serve runs, written as run_pipeline
    writes it: the same bytes for the same seed."""
    from ..pipeline.text_to_image import write_png
    from ..pipeline.video_file import FPS, check_writer, clip_metadata, video_kind, write_video
    from ..serve.client import PipelineClient, check_address

    if prompt is None:
        raise InputError("--server needs --prompt \"...\"")
    check_address(url)  # before the first line of progress: a bad address is the one line
    console = console or Console()
    with PipelineClient(url) as client, Outputs(force) as outputs:
        kind = video_kind(out_path) if client.frames else "png"
        if client.frames:
            check_writer(kind)
        else:
            check_out(out_path, (".png",))
        staged = outputs.claim(out_path, folder=kind == "png" and client.frames is not None)
        console.line(f"ptdit-run: {url}, {steps} steps, cfg {guidance}, seed {seed}")
        result = client.generate(prompt, negative_prompt, seed, steps, guidance, height=height, width=width,
                                 use_resolution_binning=use_resolution_binning, cache=cache)
        for name, seconds in result.timings.items():
            console.line(f"  {name}: {seconds:.2f} s (on the server)")
        metadata = pipeline_metadata(prompt, negative_prompt, result.pipeline, steps, guidance, seed, height, width)
        if client.frames:
            frames = list(result.pixels)
            metadata = clip_metadata(metadata, client.frames, len(frames))
            write_video(staged, kind, frames, metadata)
            shape: dict[str, Any] = {"video": list(result.pixels.shape), "fps": FPS, "format": kind}
        else:
            write_png(staged, result.pixels, metadata)
            shape = {"image": list(result.pixels.shape)}
        outputs.commit()
    return {**metadata, "out": str(out_path), **shape, "seconds": result.timings,
            "server": url, "cache": cache or "off", "transformer_calls": result.transformer_calls,
            "sample_seconds": result.timings["sample"]}


def run(artifact_path: Path, backend: str, device: str, steps: int, guidance: float, seed: int, shift: float | None,
        text_path: Path | None, negative_path: Path | None, random_text: bool, out_path: Path, force: bool,
        verify: bool, tensorrt: TensorRTOptions | None = None, console: Console | None = None,
        cache: str | None = None) -> dict[str, Any]:
    from ..artifact import load_artifact
    from ..sampling.caching import CacheSettings
    from ..sampling.latents import save_latents
    from ..sampling.step_sampler import make_sampler
    from ..sampling.text import load_text, make_conditioning
    from ..session import open_session

    console = console or Console()
    check_out(out_path, (".npy", ".safetensors"))
    if random_text and (text_path or negative_path):
        raise InputError("pass either --random-text or --text/--negative-text, not both")
    cond = load_text(text_path) if text_path else None
    uncond = load_text(negative_path) if negative_path else None
    settings = CacheSettings(artifact_path)
    if cache is not None:  # a calibration the artifact lacks: refused before it is opened
        settings.check(cache, load_artifact(artifact_path, verify=False), steps)

    with Outputs(force) as outputs:
        staged = outputs.claim(out_path)  # before any work: locked, writable, not there yet
        with open_session(str(artifact_path), backend, device, verify=verify, tensorrt=tensorrt) as session:
            text_spec = session.artifact.spec("text_embeds")
            text = make_conditioning(text_spec.shape[1], text_spec.shape[2], cond, uncond,
                                     random_seed=seed if random_text else None, source=str(text_path or ""))
            caching = settings.sampler_args(cache, session.artifact)
            sampler = make_sampler(session, steps, guidance, seed, shift, **caching)
            step_graph = session.artifact.is_step
            loop = "the step graph, state on the device" if step_graph else "host loop"
            cached = (f", cache {caching['cache']} ({sum(sampler.plan)} of {steps} steps computed)"
                      if caching["cache"] else "")
            console.line(f"ptdit-run: {artifact_path.name} on {session.backend} ({loop}), {steps} steps, cfg "
                         f"{guidance}, seed {seed}, shift {sampler.shift:.3f}{cached}")
            with console.counter("sampling", steps, "step") as advance:
                def progress(i: int, t: float, timing: Any) -> None:  # host time: a queued GPU step may still run
                    advance(f"t={t:7.2f}  host {timing.total_s * 1000:8.1f} ms")

                result = sampler.sample(text, on_step=progress)
            metadata = {"artifact": artifact_path.name, "backend": session.backend, "steps": steps, "cfg": guidance,
                        "seed": seed, "shift": sampler.shift, "text": text.source or "none",
                        "cache": str(caching["cache"] or "off")}
            save_latents(staged, result.latent, metadata)
        outputs.commit()
    seconds = result.seconds
    return {**metadata, "out": str(out_path), "shape": list(result.latent.shape), "seconds": round(seconds, 3),
            "loop": "step graph" if step_graph else "host",
            "ms_per_step": round(seconds / steps * 1000, 2),
            "backend_ms_per_step": round(sum(s.backend_s for s in result.steps) / steps * 1000, 2),
            "transformer_calls": result.transformer_calls, "sample_seconds": round(seconds, 3),
            "transfers": result.transfers()}


def run_pipeline(folder_path: Path, prompt: str | None, negative_prompt: str | None, backend: str, device: str,
                 steps: int, guidance: float, seed: int, shift: float | None, out_path: Path, force: bool,
                 verify: bool, tensorrt: TensorRTOptions | None = None, console: Console | None = None,
                 height: int | None = None, width: int | None = None, use_resolution_binning: bool = True,
                 cache: str | None = None) -> dict[str, Any]:
    """The image (a PNG) or for a video folder the clip (video_file's kinds) of `prompt`, at height x width."""
    import numpy as np

    from ..pipeline.folder import load_pipeline
    from ..pipeline.ptdit_pipeline import COMMAND_NAMES, PTDiTPipeline
    from ..pipeline.text_to_image import write_png
    from ..pipeline.video_file import FPS, check_writer, clip_metadata, video_kind, write_video

    if prompt is None:
        raise InputError("a pipeline folder needs --prompt \"...\"")
    console = console or Console()
    latent_frames = load_pipeline(folder_path, verify=False).manifest.frames  # the files are verified when opened
    video = latent_frames is not None
    kind = video_kind(out_path) if video else "png"
    if video:
        check_writer(kind)
    else:
        check_out(out_path, (".png",))
    options = tensorrt or TensorRTOptions()
    with Outputs(force) as outputs:
        staged = outputs.claim(out_path, folder=video and kind == "png")  # before any work: locked, not there yet
        with PTDiTPipeline.from_folder(folder_path, backend, device, verify,
                                       runtime_cache_dir=options.runtime_cache_dir, lean_runtime=options.lean_runtime,
                                       weight_budget=options.weight_budget) as pipe:
            assert pipe.components is not None  # from_folder: the folder's components
            try:
                drawn, wanted = pipe.size_for(height, width, use_resolution_binning)
                if cache is not None:  # refused before the first line of progress
                    pipe.caching.check(cache, pipe.components.transformer(drawn).artifact, steps)
                drawn_at = f" (drawn at {drawn}, resized and cropped)" if drawn != wanted else ""
                console.line(f"ptdit-run: {folder_path.name}, {wanted}{drawn_at}, {steps} steps, cfg {guidance}, "
                             f"seed {seed}")
                with console.counter("sampling", steps, "step") as step_done, \
                        console.counter("decoding", pipe.components.tiles(drawn), "tile") as tile_done:
                    result = pipe(prompt, negative_prompt, steps, guidance, seed, shift=shift,
                                  callback_on_step_end=lambda i, t, latent: step_done(f"t={t:7.2f}"),
                                  on_tile=lambda: tile_done(""), height=height, width=width,
                                  use_resolution_binning=use_resolution_binning, cache=cache)
            except InputError as e:  # named as this command names them
                raise e.renamed(COMMAND_NAMES) from None
            for name, seconds in result.timings.items():
                console.line(f"  {name}: {seconds:.2f} s")
            metadata = pipeline_metadata(prompt, negative_prompt, folder_path.name, steps, guidance, seed, height,
                                         width)
            if video:
                assert isinstance(result.frames, list) and latent_frames is not None
                frames = [np.asarray(frame) for frame in result.frames[0]]
                metadata = clip_metadata(metadata, latent_frames, len(frames))
                write_video(staged, kind, frames, metadata)
                shape = {"video": [len(frames), *frames[0].shape], "fps": FPS, "format": kind}
            else:
                assert isinstance(result.images, list)
                pixels = np.asarray(result.images[0])
                write_png(staged, pixels, metadata)
                shape = {"image": list(pixels.shape)}
        outputs.commit()
    return {**metadata, "out": str(out_path), **shape, "seconds": result.timings, "backends": result.backends,
            "cache": cache or "off", "transformer_calls": result.transformer_calls,
            "sample_seconds": result.timings["sample"]}

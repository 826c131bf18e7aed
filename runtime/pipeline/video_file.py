"""A clip's file: .mp4 (H.264 through imageio-ffmpeg, whose wheel brings its own ffmpeg, at the published writer's
settings: imageio quality 6, 24 fps, yuv420p), .webp (animated, lossless: its decoded frames are the pipeline's
frames), .gif (Pillow, one adaptive palette per frame; GIF counts time in 1/100 s, so 24 fps plays at 25), or a
folder of PNG frames (a path without a suffix). The run's settings go into the file: the MP4's comment tag, the
WebP's EXIF ImageDescription and the GIF's comment as JSON, each PNG's text chunks.

Reruns give the same bytes: x264 runs on one thread (its output depends on the thread count) with ffmpeg's
bitexact flags (no version strings or times), for the same imageio-ffmpeg wheel.

Nothing is taken on trust: each writer is tried on two tiny frames before any work (check_writer), and what it
wrote is read back before the caller publishes it (an .mp4 decodes whole to as many frames, a .gif to as many
frames, a .webp and PNG frames to the very frames).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ptdit.contract.errors import Failure, InputError
from ptdit.contract.outputs import shown, write_error

from .ffmpeg_process import decoded_frames, encode_mp4, macro_blocks, try_encoder

FPS = 24  # the published sampler's (Open-Sora-Plan v1.2 opensora/sample/sample_t2v.py --fps)
MP4_QUALITY = 6  # imageio's 0-10 quality scale, as the published sampler writes its clips
VIDEO_SUFFIXES = (".mp4", ".webp", ".gif")
EXIF_IMAGE_DESCRIPTION = 0x010E


def video_kind(path: Path) -> str:
    """"mp4", "webp", "gif", or "png" for a folder of frames (a path without a suffix)."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return path.suffix[1:].lower()
    if path.suffix == "":
        return "png"
    raise InputError(f"--out must end in {', '.join(VIDEO_SUFFIXES)}, or have no suffix (a folder of PNG frames) "
                     f"for a video pipeline, got {path.name}")


def clip_metadata(metadata: dict[str, Any], latent_frames: int, video_frames: int) -> dict[str, Any]:
    """A run's metadata (output.pipeline_metadata) with what a clip adds: the same from a folder, a server and the
    OpenAI front, so the same seed gives the same file."""
    return {**metadata, "latent_frames": latent_frames, "video_frames": video_frames, "fps": FPS}


def check_writer(kind: str) -> None:
    """The writer of `kind` works, tried on two tiny frames before any work: for .mp4 imageio-ffmpeg and an ffmpeg
    that encodes H.264 and reads it back, for the others Pillow (with WebP for .webp)."""
    if kind == "mp4":
        try_encoder()
        return
    what = f"a .{kind}" if kind != "png" else "PNG frames"
    try:
        from PIL import features
    except ImportError:
        raise InputError(f"writing {what} needs pillow: pip install pillow (or the [video] extra)") from None
    if kind == "webp" and not features.check_module("webp"):  # animation comes with it (Pillow >= 11)
        raise InputError("writing a .webp needs a Pillow built with WebP: pip install --force-reinstall pillow (its "
                         "wheels have it), or write .mp4 or .gif")
    with tempfile.TemporaryDirectory() as folder:
        frames = [np.full((16, 16, 3), value, np.uint8) for value in (0, 255)]
        try:
            _write(Path(folder) / "trial", kind, frames, "{}", FPS)
            _check(Path(folder) / "trial", kind, _digests(frames), 16, 16, FPS)
        except (OSError, Failure) as e:
            raise InputError(f"writing {what} does not work here: {e}") from None


def write_video(path: Path, kind: str, frames: Sequence[np.ndarray], metadata: dict[str, Any],
                fps: int = FPS) -> None:
    """uint8 frames [H, W, 3] to `path` (a file, or for "png" a folder it makes), `metadata` stored in it, then read
    back: a file that does not decode whole, or to other frames, is a Failure (a full disk an OSError), so the
    caller never publishes it. `path` may be the output's temporary name: the container is named, not guessed from
    the suffix."""
    if not frames:
        raise ValueError("no frames to write")
    height, width = frames[0].shape[:2]
    try:
        _write(path, kind, frames, json.dumps(metadata, sort_keys=True), fps, metadata)
    except OSError as e:
        raise write_error(e, path) from None
    _check(path, kind, _digests(frames), width, height, fps)


def _write(path: Path, kind: str, frames: Sequence[np.ndarray], text: str, fps: int,
           metadata: dict[str, Any] | None = None) -> None:
    if kind == "mp4":
        encode_mp4(path, frames, fps, MP4_QUALITY, text)
    elif kind == "png":
        from .text_to_image import write_png

        path.mkdir()
        for i, frame in enumerate(frames):
            write_png(path / f"frame-{i:05d}.png", frame, {**(metadata or {}), "frame": i})
    else:
        from PIL import Image

        images = [Image.fromarray(frame, "RGB") for frame in frames]
        duration = frame_ms(fps)
        if kind == "gif":
            images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0,
                           comment=text.encode())
        else:
            exif = Image.Exif()
            exif[EXIF_IMAGE_DESCRIPTION] = text
            images[0].save(path, format="WEBP", save_all=True, append_images=images[1:], duration=duration, loop=0,
                           lossless=True, exif=exif.tobytes())


def frame_ms(fps: int) -> int:
    """How long each frame of a .webp or .gif is shown, as written (whole milliseconds)."""
    return round(1000 / fps)


def _digests(frames: Sequence[np.ndarray]) -> list[bytes]:
    return [hashlib.sha256(np.ascontiguousarray(frame).tobytes()).digest() for frame in frames]


def _check(path: Path, kind: str, digests: list[bytes], width: int, height: int, fps: int) -> None:
    """What was written reads back: as many frames of the right size (.mp4 and .gif: H.264 and a palette are
    lossy), the very frames (lossless .webp; PNG frames are each read back as write_png writes them)."""
    if kind == "mp4":
        count = decoded_frames(path, macro_blocks(width), macro_blocks(height))
    elif kind == "png":
        count = len(list(path.iterdir()))
    else:
        found = _read_animation(path, width, height, fps, digests)
        if kind == "webp" and len(found) == len(digests) and found != digests:
            raise Failure(f"{shown(path)} was written but reads back other frames than were written")
        count = len(found)
    if count != len(digests):
        raise Failure(f"{shown(path)} was written but reads back as {count} frames, not {len(digests)}")


def _read_animation(path: Path, width: int, height: int, fps: int, written: list[bytes]) -> list[bytes]:
    """The digest of every frame of a .gif or .webp as it is shown. Pillow stores a run of identical frames once
    with their durations added up (a GIF's rounded down to 1/100 s), and a clip of one picture as a still with no
    duration: that one frame stands for every frame written if they are all the same."""
    from PIL import Image

    unit = frame_ms(fps)  # what each frame was written with
    shown_frames: list[tuple[bytes, int | None]] = []
    try:
        with Image.open(path) as image:
            for i in range(getattr(image, "n_frames", 1)):
                image.seek(i)
                pixels = np.asarray(image.convert("RGB"))
                if pixels.shape != (height, width, 3):
                    raise Failure(f"{shown(path)} holds a frame of {pixels.shape[1]} x {pixels.shape[0]}, not "
                                  f"{width} x {height}")
                shown_frames.append((hashlib.sha256(pixels.tobytes()).digest(), image.info.get("duration")))
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's words for a file it cannot read
        raise Failure(f"{shown(path)} was written but does not read back: {e}") from None
    if len(shown_frames) == 1 and not shown_frames[0][1]:
        return [shown_frames[0][0]] * len(written) if set(written) == {shown_frames[0][0]} else [shown_frames[0][0]]
    return [digest for digest, duration in shown_frames for _ in range(max(1, round((duration or unit) / unit)))]

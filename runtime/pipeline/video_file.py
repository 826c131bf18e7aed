"""A clip's file: .mp4 (H.264 through imageio-ffmpeg, whose wheel brings its own ffmpeg, at the published writer's
settings: imageio quality 6, 24 fps, yuv420p), .webp (animated, lossless: its decoded frames are the pipeline's
frames), .gif (Pillow, one adaptive palette per frame; GIF counts time in 1/100 s, so 24 fps plays at 25), or a
folder of PNG frames (a path without a suffix). The run's settings go into the file: the MP4's comment tag, the
WebP's EXIF ImageDescription and the GIF's comment as JSON, each PNG's text chunks.

Reruns give the same bytes: x264 runs on one thread (its output depends on the thread count) with ffmpeg's
bitexact flags (no version strings or times), for the same imageio-ffmpeg wheel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ptdit.contract.errors import InputError

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


def check_writer(kind: str) -> None:
    """What a kind needs is installed and works (before any work): imageio-ffmpeg and its ffmpeg binary for .mp4,
    Pillow (with WebP for .webp)."""
    package = "imageio-ffmpeg" if kind == "mp4" else "pillow"
    what = "an .mp4" if kind == "mp4" else f"a {kind}" if kind != "png" else "PNG frames"
    try:
        if kind == "mp4":
            import imageio_ffmpeg

            imageio_ffmpeg.get_ffmpeg_exe()  # a wheel brings one; an sdist or $IMAGEIO_FFMPEG_EXE may not
        else:
            from PIL import features

            if kind == "webp" and not features.check_module("webp"):  # animation comes with it (Pillow >= 11)
                raise InputError("writing a .webp needs a Pillow built with WebP: pip install --force-reinstall "
                                 "pillow (its wheels have it), or write .mp4 or .gif")
    except ImportError:
        raise InputError(f"writing {what} needs {package}: pip install {package} (or the [video] extra)") from None
    except RuntimeError as e:  # imageio-ffmpeg without a usable ffmpeg
        raise InputError(f"writing {what} needs ffmpeg: {str(e).splitlines()[0]} (pip install --force-reinstall "
                         f"imageio-ffmpeg brings one)") from None


def write_video(path: Path, kind: str, frames: Sequence[np.ndarray], metadata: dict[str, Any],
                fps: int = FPS) -> None:
    """uint8 frames [H, W, 3] to `path` (a file, or for "png" a folder it makes), `metadata` stored in it. `path`
    may be the output's temporary name: the container is named, not guessed from the suffix."""
    check_writer(kind)
    text = json.dumps(metadata, sort_keys=True)
    if kind == "mp4":
        _write_mp4(path, frames, text, fps)
    elif kind == "png":
        from .text_to_image import write_png

        path.mkdir()
        for i, frame in enumerate(frames):
            write_png(path / f"frame-{i:05d}.png", frame, {**metadata, "frame": i})
    else:
        from PIL import Image

        images = [Image.fromarray(frame, "RGB") for frame in frames]
        duration = round(1000 / fps)
        if kind == "gif":
            images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0,
                           comment=text.encode())
        else:
            exif = Image.Exif()
            exif[EXIF_IMAGE_DESCRIPTION] = text
            images[0].save(path, format="WEBP", save_all=True, append_images=images[1:], duration=duration, loop=0,
                           lossless=True, exif=exif.tobytes())


def _write_mp4(path: Path, frames: Sequence[np.ndarray], comment: str, fps: int) -> None:
    import imageio_ffmpeg

    height, width = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", quality=MP4_QUALITY, pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p", macro_block_size=16, ffmpeg_log_level="error",
        output_params=["-f", "mp4", "-threads", "1", "-fflags", "+bitexact", "-flags", "+bitexact",
                       "-metadata", f"comment={comment}"])
    writer.send(None)  # start ffmpeg
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()

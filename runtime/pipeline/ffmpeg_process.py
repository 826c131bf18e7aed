"""ffmpeg as a child process that lives and dies with the command: the H.264 encode of an .mp4, its read-back, and
the trial that finds an ffmpeg that cannot encode before any work.

The child runs in a session of its own, so a Ctrl-C at the terminal reaches only this process; whatever stops
this process while the child runs (an error, SIGINT, SIGTERM) kills the child and waits for it before the
exception goes on, so nothing writes into a temporary folder after it is removed. The child's exit status and
its stderr are always read: an ffmpeg that failed is never taken for one that wrote a file.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ptdit.contract.errors import Failure, InputError
from ptdit.contract.interrupts import signals_deferred
from ptdit.contract.outputs import shown

# Why a write failed, as ffmpeg prints it (strerror): a full disk is told as every stage tells it.
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES)
CHUNK = 1 << 20
MACRO_BLOCK = 16  # H.264's: a frame of another size is scaled up to the next multiple, as imageio-ffmpeg does


def macro_blocks(pixels: int) -> int:
    """A frame side as the .mp4 stores it."""
    return -(-pixels // MACRO_BLOCK) * MACRO_BLOCK


@dataclass(frozen=True)
class Finished:
    code: int
    stderr: str
    stdout_bytes: int = 0

    def reason(self) -> str:
        """ffmpeg's last words, on one line."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        if lines:
            return lines[-1]
        return f"killed by {signal.Signals(-self.code).name}" if self.code < 0 else f"exit status {self.code}"


def ffmpeg_exe() -> str:
    """The ffmpeg of imageio-ffmpeg (its wheel brings one; $IMAGEIO_FFMPEG_EXE names another)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise InputError("writing an .mp4 needs imageio-ffmpeg: pip install imageio-ffmpeg (or the [video] "
                         "extra)") from None
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as e:  # an sdist without a binary, or $IMAGEIO_FFMPEG_EXE naming nothing usable
        raise InputError(f"writing an .mp4 needs ffmpeg: {str(e).splitlines()[0]} ({_fix()})") from None


def _fix() -> str:
    where = "unset IMAGEIO_FFMPEG_EXE or point it at a working ffmpeg, or " if os.environ.get("IMAGEIO_FFMPEG_EXE") \
        else ""
    return f"{where}pip install --force-reinstall imageio-ffmpeg (its wheel brings one)"


def run(command: list[str], feed: Iterable[bytes] | None = None) -> Finished:
    """Run `command`: with `feed`, write it to the child's stdin; without, count the bytes of its stdout. However
    this ends (an error, SIGINT, SIGTERM, any number of them), the child is stopped and waited for first."""
    with tempfile.TemporaryFile() as errors:
        process = None
        try:
            with signals_deferred():  # a signal now is raised once the child is known, so it is never left behind
                process = subprocess.Popen(command, stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL if feed is not None else subprocess.PIPE,
                                           stderr=errors, start_new_session=True)
            size = 0
            if feed is not None:
                assert process.stdin is not None
                try:
                    for chunk in feed:
                        process.stdin.write(chunk)
                    process.stdin.close()
                except BrokenPipeError:  # the child stopped reading: it failed, and its stderr says why
                    pass
            else:
                assert process.stdout is not None
                while chunk := process.stdout.read(CHUNK):
                    size += len(chunk)
            code = process.wait()
        finally:
            if process is not None:
                _reap(process)
        errors.seek(0)
        return Finished(code, errors.read().decode(errors="replace"), size)


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Kill the child if it still runs and wait for it, however many signals arrive meanwhile (the first is raised
    once it is done), then close its pipes."""
    interrupt: KeyboardInterrupt | None = None
    while process.returncode is None:
        try:
            process.kill()
            process.wait()
        except KeyboardInterrupt as e:
            interrupt = interrupt or e
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            try:
                stream.close()
            except BrokenPipeError:
                pass
    if interrupt is not None:
        raise interrupt


def encode_command(exe: str, path: Path, width: int, height: int, fps: int, quality: float,
                   comment: str) -> list[str]:
    """H.264 (libx264) in yuv420p from rgb24 frames on stdin, as imageio-ffmpeg's writer runs it at `quality` (0-10)
    (frames scaled up to whole macro blocks), on one thread with ffmpeg's bitexact flags so that reruns give the
    same bytes."""
    crf = int((1 - quality / 10.0) * 51)
    padded = (macro_blocks(width), macro_blocks(height))
    scale = ["-vf", f"scale={padded[0]}:{padded[1]}"] if padded != (width, height) else []
    return [exe, "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}", "-pix_fmt", "rgb24",
            "-r", str(Fraction(fps).limit_denominator()), "-i", "-", "-an", "-vcodec", "libx264", "-pix_fmt",
            "yuv420p", "-crf", str(crf), *scale, "-v", "error", "-f", "mp4", "-threads", "1", "-fflags", "+bitexact",
            "-flags", "+bitexact", "-metadata", f"comment={comment}", str(path)]


def encode_mp4(path: Path, frames: Iterable[np.ndarray], fps: int, quality: float, comment: str) -> int:
    """Encode uint8 frames [H, W, 3] (H and W even) into the .mp4 `path`; the number of frames. A failed ffmpeg
    raises: a full disk as OSError (as every write of the toolkit), anything else as Failure."""
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ValueError("no frames to write")
    height, width = first.shape[:2]
    count = 0

    def feed() -> Iterator[bytes]:
        nonlocal count
        for frame in _chain(first, iterator):
            if frame.shape != first.shape or frame.dtype != np.uint8:
                raise ValueError(f"frame {count} is {frame.dtype} {list(frame.shape)}, not uint8 "
                                 f"{list(first.shape)}")
            count += 1
            yield np.ascontiguousarray(frame).tobytes()

    finished = run(encode_command(ffmpeg_exe(), path, width, height, fps, quality, comment), feed())
    if finished.code != 0:
        raise write_failure(path, finished)
    return count


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def write_failure(path: Path, finished: Finished) -> Exception:
    """ffmpeg's failure to write `path`: the disk's reason as OSError (its strerror in ffmpeg's words), else
    Failure with ffmpeg's last line."""
    if finished.code == -signal.SIGXFSZ:  # over the file size limit (ulimit -f)
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG), shown(path))
    for code in WRITE_ERRORS:
        if os.strerror(code) in finished.stderr:
            return OSError(code, os.strerror(code), shown(path))
    return Failure(f"ffmpeg could not write {shown(path)}: {finished.reason()}")


def decoded_frames(path: Path, width: int, height: int) -> int:
    """How many whole [height, width] frames the .mp4 `path` decodes to; Failure if ffmpeg cannot decode it all."""
    finished = run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    if finished.code != 0 or finished.stderr.strip():
        raise Failure(f"{shown(path)} was written but does not decode: {finished.reason()}")
    frame = width * height * 3
    if finished.stdout_bytes % frame:
        raise Failure(f"{shown(path)} was written but decodes to frames of another size than {width} x {height}")
    return finished.stdout_bytes // frame


def try_encoder() -> None:
    """Encode two tiny frames and read them back: an ffmpeg that cannot (no libx264, a broken binary, one that
    is not ffmpeg at all) is an InputError before any work."""
    exe = ffmpeg_exe()
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "trial.mp4"
        frames = [np.full((16, 16, 3), value, np.uint8) for value in (0, 255)]
        try:
            finished = run(encode_command(exe, clip, 16, 16, 24, 6, "trial"),
                           (frame.tobytes() for frame in frames))
            works = finished.code == 0 and decoded_frames(clip, 16, 16) == len(frames)
            reason = finished.reason()
        except OSError as e:  # not executable, not a program
            works, reason = False, e.strerror or str(e)
        except Failure as e:
            works, reason = False, str(e)
    if not works:
        raise InputError(f"writing an .mp4 needs an ffmpeg that encodes H.264 (libx264), and {exe} cannot: "
                         f"{reason}; {_fix()}, or write .webp, .gif or PNG frames")

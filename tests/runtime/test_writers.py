"""Every file a command writes is checked before it is published, and a writer that cannot work is found before
any work: the clip writers (.mp4 through ffmpeg, .webp, .gif, PNG frames) and the PNG, under a full disk, a
failing or missing ffmpeg, and SIGINT / SIGTERM at several points of a write by the ffmpeg child."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import on_a_terminal
from ptdit.contract.errors import Failure, InputError

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "a red fox running in the snow"
PAGE = 4096
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


def noise(count: int, side: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(count)]


class Disk:
    """A tmpfs of `pages` pages at `path` for the body (tmpfs counts whole pages per file)."""

    def __init__(self, path: Path, pages: int) -> None:
        self.path, self.pages = path, pages

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        size = f"size={self.pages * PAGE}"
        if subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(self.path)]).returncode:
            pytest.skip("cannot mount a tmpfs here")
        return self.path

    def __exit__(self, *exc_info: object) -> None:
        subprocess.run(["umount", str(self.path)], check=True)


def last_line(result: subprocess.CompletedProcess[str] | str) -> str:
    text = result if isinstance(result, str) else result.stderr
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def test_each_writer_reads_back_what_it_wrote(tmp_path):
    """The frames of every kind read back (WebP and PNG exactly; a run of identical frames, stored once by WebP
    and GIF, counts as often as it is shown); a file cut short or overwritten with other frames is refused."""
    from runtime.pipeline import video_file

    frames = noise(6)
    frames[2] = frames[3] = frames[1]  # stored once, shown three times
    for kind in ("mp4", "webp", "gif", "png"):
        path = tmp_path / (f"clip.{kind}" if kind != "png" else "frames")
        video_file.write_video(path, kind, frames, {"prompt": "x"})
        video_file._check(path, kind, video_file._digests(frames), 64, 64, video_file.FPS)
    with pytest.raises(Failure, match="reads back as 6 frames, not 7"):
        video_file._check(tmp_path / "clip.webp", "webp", video_file._digests([*frames, frames[0]]), 64, 64, 24)
    with pytest.raises(Failure, match="reads back other frames than were written"):
        video_file._check(tmp_path / "clip.webp", "webp", video_file._digests(noise(6, seed=1)), 64, 64, 24)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes((tmp_path / "clip.mp4").read_bytes()[:-200])  # the moov atom is last: cut short, it is gone
    with pytest.raises(Failure, match="cut.mp4 was written but does not decode"):
        video_file._check(cut, "mp4", video_file._digests(frames), 64, 64, 24)
    (tmp_path / "cut.gif").write_bytes((tmp_path / "clip.gif").read_bytes()[:300])
    with pytest.raises(Failure, match="cut.gif was written but"):
        video_file._check(tmp_path / "cut.gif", "gif", video_file._digests(frames), 64, 64, 24)


@pytest.mark.parametrize("run", [1, 2, 11, 13, 16, 29, 48])
def test_runs_of_identical_frames_and_still_clips_read_back(tmp_path, run):
    """Pillow stores a run of identical frames once (a GIF's duration rounded down to 1/100 s) and a clip of one
    picture as a still: both read back as the frames written. An .mp4 of a size that is no multiple of 16 is
    scaled up to whole macro blocks, as imageio-ffmpeg writes it, and reads back at that size."""
    from runtime.pipeline.video_file import write_video

    still, other = noise(2, side=32)
    for kind in ("gif", "webp"):
        write_video(tmp_path / f"still.{kind}", kind, [still] * run, {})
        write_video(tmp_path / f"runs.{kind}", kind, [still] * run + [other] + [still] * run, {})
    rng = np.random.default_rng(run)
    write_video(tmp_path / "odd.mp4", "mp4", [rng.integers(0, 256, (40, 72, 3), np.uint8) for _ in range(3)], {})


def test_a_signal_deferred_while_the_body_fails_is_still_raised():
    """signals_deferred (around a child's start, a publish): a signal that came while the body raised replaces the
    body's error (Ctrl-C then a bad ffmpeg is exit 130, not 2), and both handlers are back afterwards."""
    from ptdit.contract.interrupts import Terminated, signals_deferred

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as stopped:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            raise OSError(2, "No such file or directory")
    assert isinstance(stopped.value.__context__, OSError)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()



def test_a_command_started_with_sigint_ignored_keeps_ignoring_it():
    """As Python does (and POSIX asks of a job started in the background by a shell without job control): a SIGINT
    that was ignored when the command started stays ignored by every stage's handlers (the publish's deferral, the
    build's); SIGTERM still stops it."""
    from ptdit.contract.interrupts import Terminated, signals_deferred, stopping_signals

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # the test run itself may ignore it
    try:
        assert stopping_signals() == (signal.SIGINT, signal.SIGTERM)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        assert stopping_signals() == (signal.SIGTERM,)
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        with pytest.raises(Terminated), signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, previous)

@needs_root
@pytest.mark.parametrize("kind", ["mp4", "webp", "gif", "png"])
def test_a_full_disk_under_each_writer_is_said_and_nothing_is_published(tmp_path, kind, capsys):
    from ptdit.contract.commands import exit_codes
    from ptdit.contract.outputs import Outputs
    from runtime.pipeline.video_file import write_video

    with Disk(tmp_path / "disk", 8) as disk:  # 32 KiB; the clip is about 400 KB
        out = disk / ("clip" if kind == "png" else f"clip.{kind}")
        with pytest.raises(SystemExit) as stopped, Outputs() as outputs:
            with exit_codes("test"):
                write_video(outputs.claim(out, folder=kind == "png"), kind, noise(32), {})
                outputs.commit()
        assert stopped.value.code == 1
        shown = re.escape(str(out)) + (r"/frame-\d{5}\.png" if kind == "png" else "")  # not a temporary name
        assert re.fullmatch(f"test: error: {shown}: No space left on device; nothing was written",
                            last_line(capsys.readouterr().err))
        assert sorted(p.name for p in disk.iterdir()) == []


def test_a_png_that_does_not_read_back_is_not_published(tmp_path, monkeypatch):
    """write_png reads its file back: a writer that left other pixels (here, a Pillow whose save writes a
    different image) is a Failure, not a published PNG."""
    from PIL import Image

    from runtime.pipeline.text_to_image import write_png

    pixels = noise(1)[0]
    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", lambda self, *a, **k: real_save(self.transpose(0), *a, **k))
    with pytest.raises(Failure, match="reads back other pixels than were written"):
        write_png(tmp_path / "x.png", pixels, {})


def stand_in_ffmpeg(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "ffmpeg"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("exe,reason", [
    ("no-libx264", "Unknown encoder 'libx264'"),
    ("/nonexistent/ffmpeg", "No such file or directory"),
    ("not-a-program", "Permission denied"),
])
def test_an_ffmpeg_that_cannot_encode_is_refused_before_any_work(video_pipeline, tmp_path, exe, reason):
    """ptdit-run tries its writer before it opens the pipeline: one line, exit 2, nothing sampled or written."""
    if exe == "no-libx264":  # an ffmpeg built without it, as ffmpeg says so
        exe = str(stand_in_ffmpeg(tmp_path, "cat > /dev/null; echo \"Unknown encoder 'libx264'\" >&2; exit 1"))
    elif exe == "not-a-program":
        (tmp_path / exe).write_text("a text file, not executable")
        exe = str(tmp_path / exe)
    result = subprocess.run([sys.executable, "-m", "runtime", str(video_pipeline), "--prompt", PROMPT, "--out",
                             str(tmp_path / "out" / "clip.mp4")], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "IMAGEIO_FFMPEG_EXE": exe})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line: no sampling progress, no ffmpeg dump
    assert last_line(result).startswith(f"ptdit-run: error: writing an .mp4 needs an ffmpeg that encodes H.264 "
                                        f"(libx264), and {exe} cannot: {reason}; unset IMAGEIO_FFMPEG_EXE")
    assert not (tmp_path / "out").exists()


def test_writers_are_tried_before_any_work(tmp_path, monkeypatch):
    """check_writer writes and reads back two tiny frames: a Pillow that cannot write is an InputError."""
    from PIL import Image

    from runtime.pipeline.video_file import check_writer

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    for kind in ("webp", "gif", "png"):
        with pytest.raises(InputError, match="does not work here: .*No space left on device"):
            check_writer(kind)


def mp4_atoms(data: bytes) -> dict[str, tuple[int, int]]:
    """Top-level atoms of an .mp4: name -> (offset, size)."""
    atoms, offset = {}, 0
    while offset < len(data):
        size, name = struct.unpack(">I4s", data[offset:offset + 8])
        atoms[name.decode()] = (offset, size)
        offset += size
    return atoms


@needs_root
def test_a_disk_that_fills_while_ffmpeg_writes_the_trailer(video_pipeline, video_clip, tmp_path):
    """The issue's case: ptdit-run to .mp4 where the frames (the mdat atom) fit and the trailer (the moov atom,
    written last; sized from the same run's clip written elsewhere) does not. On a tmpfs with pages for the frames
    and the lock file where the trailer needs one more page; else (the trailer fits in the frames' last page) under
    a file size limit just past the frames. ffmpeg fails at its end; the run says so and publishes nothing."""
    import resource

    from conftest import VIDEO_CLIP_ARGS

    data = video_clip[0].read_bytes()
    atoms = mp4_atoms(data)
    mdat_end = sum(atoms["mdat"])
    assert atoms["moov"][0] == mdat_end and mdat_end + atoms["moov"][1] == len(data)
    frames_pages = -(-mdat_end // PAGE)
    by_pages = frames_pages < -(-len(data) // PAGE)

    def limited() -> None:  # in the child: writes past the frames are refused (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (mdat_end + 8, mdat_end + 8))

    with Disk(tmp_path / "disk", frames_pages + 1 if by_pages else frames_pages + 64) as disk:
        result = subprocess.run([sys.executable, "-m", "runtime", str(video_pipeline), *VIDEO_CLIP_ARGS, "--out",
                                 str(disk / "clip.mp4")], cwd=ROOT, capture_output=True, text=True,
                                preexec_fn=None if by_pages else limited)
        assert result.returncode == 1, result.stderr
        reason = "No space left on device" if by_pages else "File too large"
        assert last_line(result) == f"ptdit-run: error: {disk / 'clip.mp4'}: {reason}; nothing was written"
        assert list(disk.iterdir()) == []
        assert "wrote" not in result.stdout


# A child that writes a clip as ptdit-run does (claim, write, read back, publish, under exit_codes), telling on
# stderr where the frames are: "frame 0" (taken before ffmpeg starts), "frame 1", ..., "sent" once ffmpeg has them all.
WRITER = """
import sys
import numpy as np
from pathlib import Path
from ptdit.contract.commands import exit_codes
from ptdit.contract.outputs import Outputs
from runtime.pipeline.video_file import write_video

class Told(list):
    told = False
    def __iter__(self):
        for i, frame in enumerate(list.__iter__(self)):
            if not self.told:
                print(f"frame {i}", file=sys.stderr, flush=True)
            yield frame
        if not self.told:
            print("sent", file=sys.stderr, flush=True)
        self.told = True

rng = np.random.default_rng(0)
frames = Told(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(int(sys.argv[2])))
with exit_codes("writer"):
    with Outputs() as outputs:
        write_video(outputs.claim(Path(sys.argv[1])), "mp4", frames, {})
        outputs.commit()
"""


def children(pid: int) -> dict[int, str]:
    """The live child processes of `pid`: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point", ["first frame", "mid-stream", "ffmpeg finishing", "read-back"])
def test_a_signal_during_the_ffmpeg_write_stops_it_and_publishes_nothing(tmp_path, signum, point):
    """At each point of the write (ffmpeg taking frames, ffmpeg finishing after the last, the read-back's ffmpeg
    decoding), the signal stops the command: the child is killed and waited for, nothing is published, nothing
    is left in the folder (nor written there later), the message says so, exit 130 / 143."""
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(out / "clip.mp4"), "96"], cwd=ROOT,
                               stderr=subprocess.PIPE, text=True, preexec_fn=on_a_terminal)
    assert process.stderr is not None
    seen: dict[int, str] = {}
    wanted = {"first frame": "frame 1", "mid-stream": "frame 48", "ffmpeg finishing": "sent"}.get(point)
    told = []
    for line in process.stderr:
        told.append(line)
        seen.update(children(process.pid))
        if wanted is not None and line.strip() == wanted:
            break
        if wanted is None and line.strip() == "sent":  # then wait for the read-back's ffmpeg
            deadline = time.monotonic() + 60
            while not any("rawvideo -pix_fmt rgb24 -" in c and "-i " in c for c in children(process.pid).values()):
                assert process.poll() is None and time.monotonic() < deadline, "the read-back was never seen"
                time.sleep(0.005)
            seen.update(children(process.pid))
            break
    encoders = [pid for pid, line in seen.items() if "libx264" in line]
    assert encoders and process.poll() is None, "".join(told)
    if point != "read-back":
        assert alive(encoders[0]), f"the signal would not land during the encode: {point}"
    process.send_signal(signum)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 128 + signum, rest
    word = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert last_line(rest) == f"writer: error: {word}; nothing was written", rest
    assert "Exception ignored" not in rest and "Traceback" not in rest, rest
    assert not any(alive(pid) for pid in seen), "an ffmpeg child outlived the command"
    assert not out.exists() or list(out.iterdir()) == []
    time.sleep(0.3)  # nothing is written there afterwards either
    assert not out.exists() or list(out.iterdir()) == []


def test_ctrl_c_during_ptdit_runs_mp4_write(video_pipeline, tmp_path):
    """The same through ptdit-run itself: Ctrl-C once its ffmpeg runs, exit 130, no clip, no ffmpeg left."""
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "runtime", str(video_pipeline), "--prompt", PROMPT, "--steps",
                                "1", "--out", str(out / "clip.mp4")], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                               preexec_fn=on_a_terminal)
    deadline = time.monotonic() + 120
    encoders: list[int] = []
    while not encoders:
        assert process.poll() is None and time.monotonic() < deadline, "ptdit-run never started ffmpeg"
        encoders = [pid for pid, line in children(process.pid).items() if "libx264" in line and "trial" not in line]
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert last_line(stderr) == "ptdit-run: error: interrupted; nothing was written"
    assert not alive(encoders[0])
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_a_latent_is_read_back_before_it_is_published(tmp_path, monkeypatch, suffix):
    """save_latents reads its file back: the very latent, or a Failure; a full disk names the file."""
    from runtime.sampling import latents

    latent = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    latents.save_latents(tmp_path / f"ok{suffix}", latent, {"seed": 0})
    assert np.array_equal(latents.read_latent(tmp_path / f"ok{suffix}"), latent)
    monkeypatch.setattr(latents, "read_latent", lambda path: latent[..., ::-1])  # a writer that left other numbers
    with pytest.raises(Failure, match=rf"bad{re.escape(suffix)} was written but reads back another latent"):
        latents.save_latents(tmp_path / f"bad{suffix}", latent, {})


@needs_root
@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_a_full_disk_under_the_latent_writer(tmp_path, capsys, suffix):
    from ptdit.contract.commands import exit_codes
    from ptdit.contract.outputs import Outputs
    from runtime.sampling.latents import save_latents

    with Disk(tmp_path / "disk", 4) as disk:
        with pytest.raises(SystemExit) as stopped, Outputs() as outputs:
            with exit_codes("test"):
                save_latents(outputs.claim(disk / f"l{suffix}"), np.zeros((1, 4, 64, 64), np.float32), {})
                outputs.commit()
        assert stopped.value.code == 1 and list(disk.iterdir()) == []
        assert last_line(capsys.readouterr().err) == f"test: error: {disk / f'l{suffix}'}: No space left on device; " \
                                                      f"nothing was written"

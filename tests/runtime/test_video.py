"""Prompt in, video out: the published causal chunking of the CausalVAE decode (against the PyTorch reference, chunk
by chunk), ptdit-export --pipeline --frames, ptdit-run to .mp4 / .webp / .gif / PNG frames, the Python API's
.frames, ptdit-diff on a video folder, and the refusals."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ptdit.contract.pipeline_manifest import COMPONENT_MAX_REL_L2
from ptdit.contract.vae_decode import decoded_frames, decoder_shapes, temporal_chunks, tile_plan
from ptdit.vae import VAE_PRESETS, CausalVAEDecoder, published_decode

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "a red fox running in the snow"


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True)


def read_mp4(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    """An .mp4's frames [F, H, W, 3] and its metadata tags, through imageio-ffmpeg's ffmpeg."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    frames = np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader])
    listing = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                             capture_output=True, text=True, check=True).stdout
    tags = dict(line.split("=", 1) for line in listing.splitlines()[1:] if "=" in line)
    return frames, {k: re.sub(r"\\(.)", r"\1", v) for k, v in tags.items()}  # ffmetadata's backslash escapes


@pytest.mark.parametrize("frames,chunks", [
    (4, [(0, 4)]), (8, [(0, 8)]), (9, [(0, 8), (7, 9)]), (12, [(0, 8), (7, 12)]), (15, [(0, 8), (7, 15)]),
    (16, [(0, 8), (7, 15), (14, 16)]), (24, [(0, 8), (7, 15), (14, 22), (21, 24)]),
])
def test_temporal_chunks_are_the_published_ones(frames, chunks):
    """Open-Sora-Plan v1.2's tiled_decode: chunks of 8 latent frames starting every 7, the last cut at the end or
    a shorter one appended; each chunk after the first drops one decoded frame, so the clip has 1 + 4 (F - 1)."""
    assert list(temporal_chunks(frames)) == chunks
    kept = sum(decoded_frames(b - a) - (i > 0) for i, (a, b) in enumerate(chunks))
    assert kept == decoded_frames(frames) == 1 + 4 * (frames - 1)


def shapes(side: int, frames: int | None = None) -> list[tuple[int, ...]]:
    """The decoder shapes of the published decode of a square latent."""
    return decoder_shapes(tile_plan(side, side, frames, 8), temporal_chunks(frames) if frames else None, side, side)


def test_the_spatial_plan_of_a_video_decode():
    """The published decode tiles when the latent is wider than 64 or longer than 8 frames; a tiled 64-wide latent
    gets a second, 8-wide tile (as published), one of 56 or less stays whole."""
    assert not tile_plan(32, 32, 12, 8).tiled and shapes(32, 12) == [(8, 32, 32), (5, 32, 32)]
    assert not tile_plan(64, 64, 8, 8).tiled and not tile_plan(64, 64, None, 8).tiled and shapes(64, 8) == [(8, 64, 64)]
    plan = tile_plan(64, 64, 16, 8)
    assert plan.starts == (0, 56) and plan.tile == 64 and plan.blend == 64 and plan.keep == 448
    assert shapes(64, 16) == [(t, h, w) for t in (8, 2) for h in (64, 8) for w in (64, 8)]
    assert tile_plan(128, 128, 4, 8).starts == (0, 56, 112)
    assert shapes(128) == [(h, w) for h in (64, 16) for w in (64, 16)]


@pytest.mark.parametrize("frames", [12, 16])
def test_the_runtime_decode_matches_the_pytorch_reference_chunk_by_chunk(frames):
    """runtime.pipeline.tiling.decode_chunks (what every backend runs) with the tiny decoder in PyTorch as its tile
    decoder: each chunk's frames equal the PyTorch reference of the published decode's frames at that place; the
    chunked decode is far from decoding the clip whole (the causal chunks restart the causal padding)."""
    from runtime.pipeline.tiling import decode_chunks

    decoder = CausalVAEDecoder(VAE_PRESETS["tiny"]).eval()
    latent = torch.randn(1, 4, frames, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = published_decode(decoder, latent).numpy()
        whole = decoder(latent).numpy()

        def decode(tile: np.ndarray) -> np.ndarray:
            return decoder(torch.from_numpy(tile)).numpy()

        chunks = list(decode_chunks(latent.numpy(), temporal_chunks(frames), tile_plan(8, 8, frames, 8), decode))
    assert reference.shape == whole.shape == (1, 3, decoded_frames(frames), 64, 64)
    start = 0
    for chunk in chunks:
        count = chunk.shape[2]
        np.testing.assert_allclose(chunk, reference[:, :, start:start + count], rtol=0, atol=1e-6)
        start += count
    assert start == decoded_frames(frames) and len(chunks) == len(temporal_chunks(frames))
    assert np.linalg.norm(reference - whole) / np.linalg.norm(reference) > 0.1


def test_chunks_tiled_in_space_blend_as_the_reference_does():
    """A 64-wide clip of 9 latent frames: two chunks, each cut into the published 64 and 8 latent tiles, blended in
    5D. A stand-in decoder whose tiles disagree at their borders (its output depends on the tile's width, so the
    blend shows) and costs nothing: the runtime's chunked, tiled decode equals the PyTorch reference's, chunk by
    chunk."""
    from runtime.pipeline.tiling import decode_chunks

    def stand_in(z: torch.Tensor) -> torch.Tensor:  # [1, 4, t, h, w] -> [1, 3, 1 + 4 (t - 1), 8h, 8w]
        frames = torch.cat([z[:, :3, :1], z[:, :3, 1:].repeat_interleave(4, dim=2)], dim=2)
        pixels = frames.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)
        return torch.tanh(pixels + z.shape[-1] / 32)

    latent = torch.randn(1, 4, 9, 64, 64, generator=torch.Generator().manual_seed(2))
    plan = tile_plan(64, 64, 9, 8)
    calls = []

    def decode(tile: np.ndarray) -> np.ndarray:
        calls.append(tile.shape[2:])
        return stand_in(torch.from_numpy(tile)).numpy()

    with torch.no_grad():
        reference = published_decode(stand_in, latent).numpy()
        chunks = list(decode_chunks(latent.numpy(), temporal_chunks(9), plan, decode))
    assert sorted(set(calls)) == [(2, 8, 8), (2, 8, 64), (2, 64, 8), (2, 64, 64), (8, 8, 8), (8, 8, 64),
                                  (8, 64, 8), (8, 64, 64)] and len(calls) == 8
    assert [c.shape[2] for c in chunks] == [29, 4] and reference.shape == (1, 3, 33, 512, 512)
    np.testing.assert_allclose(np.concatenate(chunks, axis=2), reference, rtol=0, atol=1e-6)
    whole = stand_in(latent).numpy()
    assert np.abs(reference - whole).max() > 0.1  # the blend (and the 8-wide tiles) changed the pixels


def test_frames_map_to_uint8_and_nan_is_refused():
    from runtime.errors import RuntimeFailure
    from runtime.pipeline.tiling import to_uint8, to_unit

    chunk = np.linspace(-1.5, 1.5, 2 * 3 * 2 * 5).reshape(1, 3, 2, 2, 5).astype(np.float32)  # [1, 3, f, H, W]
    frames = to_uint8(chunk)
    assert frames.shape == (2, 2, 5, 3) and frames[0, 0, 0, 0] == 0 and frames[-1, -1, -1, -1] == 255
    np.testing.assert_array_equal(frames, np.round(to_unit(chunk) * 255).astype(np.uint8))
    chunk[0, 1, 1, 0, 2] = np.nan
    with pytest.raises(RuntimeFailure, match="the decoded video frames have 1 NaN or infinite values"):
        to_uint8(chunk)


def test_the_shift_of_a_short_clip_is_finite():
    """The published factor sqrt(pixel_frames // 17 * 5) is 0 under 17 pixel frames (NaN timesteps); 4 latent
    frames (13 pixel frames) take the image shift, longer clips the published one."""
    from ptdit.contract.schedule import timestep_shift, timesteps

    assert timestep_shift(512, 512, 4) == 1.0
    assert all(math.isfinite(t) for t in timesteps(30, timestep_shift(256, 256, 4)))
    assert timestep_shift(256, 256, 12) == pytest.approx(0.5 * math.sqrt(45 // 17 * 5), rel=2 ** -8)  # bf16


def test_video_pipeline_folder_contents_and_checks(video_pipeline):
    manifest = json.loads((video_pipeline / "pipeline.json").read_text())
    assert manifest["frames"] == 12 and manifest["vae_decoder"]["chunks"] == [[0, 8], [7, 12]]
    assert manifest["transformer"] == "ptdit-tiny-256-f12-b2-fp16.onnx"
    assert manifest["step_graph"] == "ptdit-tiny-256-f12-b2-fp16-step.onnx"
    tiles = manifest["vae_decoder"]["tiles"]
    assert sorted(tiles) == ["5x32x32", "8x32x32"] and not manifest["vae_decoder"]["plan"]["starts"][1:]
    for shape, name in tiles.items():
        component = json.loads((video_pipeline / name).with_suffix(".json").read_text())
        t, h, w = (int(v) for v in shape.split("x"))
        assert component["inputs"][0]["shape"] == [1, 4, t, h, w]
        assert component["outputs"][0]["shape"] == [1, 3, 1 + 4 * (t - 1), 8 * h, 8 * w]
        checks = component["checks"]
        assert checks["tensorrt_ops"]["max_rank"] == 5 and checks["static_shapes"]["passed"]
        assert checks["onnxruntime_parity"]["passed"] and checks["onnxruntime_parity"]["scope"] == "whole component"
        assert checks["onnxruntime_parity"]["vs_torch_fp32"]["rel_l2"] < 1e-4  # 6.2e-5 measured (8 x 32 x 32)
        parse = checks["tensorrt_parse"]
        assert parse["passed"] is (True if parse["ran"] else None)


def test_prompt_to_a_clip_and_the_python_api_give_the_same_frames(video_pipeline, video_clip, tmp_path):
    """ptdit-run --out clip.mp4, ptdit-run --out FOLDER (PNG frames) and PTDiTPipeline(...).frames ("np") for the
    same seed: the same frames, so writing the API's frames with the run's metadata gives the MP4's bytes; the
    clip has 1 + 4 (12 - 1) = 45 frames of 256 x 256 and its settings in the file. The other containers keep the
    frames (WebP and PNG exactly, GIF through a palette) and give the same bytes when written again."""
    from PIL import Image

    from runtime import PTDiTPipeline
    from runtime.diff.metrics import psnr
    from runtime.pipeline.video_file import FPS, write_video

    clip, summary = video_clip  # ptdit-run --prompt PROMPT --steps 2 --seed 3 --out clip.mp4 --json
    assert summary["video"] == [45, 256, 256, 3] and summary["fps"] == FPS and summary["format"] == "mp4"
    assert set(summary["seconds"]) == {"encode", "sample", "decode"}
    decoded, tags = read_mp4(clip)
    assert decoded.shape == (45, 256, 256, 3)
    metadata = json.loads(tags["comment"])
    assert metadata["prompt"] == PROMPT and metadata["seed"] == 3
    assert metadata["video_frames"] == 45 and metadata["latent_frames"] == 12 and metadata["fps"] == FPS

    with PTDiTPipeline.from_folder(video_pipeline, "onnxruntime", "cpu") as pipe:
        out = pipe(PROMPT, num_inference_steps=2, seed=3, output_type="np")
    assert out.images is None and out.frames.shape == (1, 45, 256, 256, 3) and out.frames.dtype == np.float32
    assert out.latents.shape == (1, 4, 12, 32, 32) and 0 <= out.frames.min() and out.frames.max() <= 1
    frames = list(np.round(out.frames[0] * 255).astype(np.uint8))  # as the "pil" frames are made
    write_video(tmp_path / "again.mp4", "mp4", frames, metadata)
    assert (tmp_path / "again.mp4").read_bytes() == clip.read_bytes()
    # H.264 at the published quality keeps 23 dB of these noise-like frames (a seeded stand-in after 2 steps);
    # each decoded frame is nearer its own frame than the next one
    matched = [psnr(a, b) for a, b in zip(decoded, frames)]
    assert min(matched) > 20 and all(m > psnr(a, b) for m, a, b in zip(matched, decoded, frames[1:]))

    folder = tmp_path / "frames"
    result = run("runtime", str(video_pipeline), "--prompt", PROMPT, "--steps", "2", "--seed", "3", "--out",
                 str(folder))
    assert result.returncode == 0, result.stderr
    assert "wrote " + str(folder) + " (45 frames, 256 x 256, 24 fps)" in result.stdout
    pngs = sorted(folder.iterdir())
    assert [p.name for p in pngs[:2]] == ["frame-00000.png", "frame-00001.png"] and len(pngs) == 45
    for i in (0, 29, 44):  # the first frame, the first of the second chunk, the last
        png = Image.open(pngs[i])
        assert np.array_equal(np.asarray(png), frames[i]) and png.text["frame"] == str(i)
    refused = run("runtime", str(video_pipeline), "--prompt", PROMPT, "--out", str(folder))
    assert refused.returncode == 2 and "pass --force" in refused.stderr and len(list(folder.iterdir())) == 45

    for kind in ("webp", "gif"):
        write_video(tmp_path / f"a.{kind}", kind, frames, metadata)
        write_video(tmp_path / f"b.{kind}", kind, frames, metadata)
        assert (tmp_path / f"a.{kind}").read_bytes() == (tmp_path / f"b.{kind}").read_bytes()
    webp = Image.open(tmp_path / "a.webp")
    assert webp.n_frames == 45 and json.loads(webp.getexif()[0x010E]) == metadata
    for i in (0, 29, 44):
        webp.seek(i)
        assert np.array_equal(np.asarray(webp.convert("RGB")), frames[i])
    gif = Image.open(tmp_path / "a.gif")
    assert json.loads(gif.info["comment"]) == metadata and gif.n_frames == 45
    assert psnr(np.asarray(gif.convert("RGB")), frames[0]) > 25


def test_the_step_graph_samples_as_the_transformer_does(video_pipeline):
    """A folder exported with --step samples with its step graph; its latents are the host loop's on the
    folder's noise-prediction transformer (fp16 graphs: to 1e-2)."""
    from runtime import PTDiTPipeline
    from runtime.pipeline.folder import load_pipeline
    from runtime.pipeline.text_to_image import PipelineComponents
    from runtime.session import open_session

    with PTDiTPipeline.from_folder(video_pipeline, "onnxruntime", "cpu") as pipe:
        assert pipe.transformer.artifact.is_step
        step = pipe(PROMPT, num_inference_steps=3, seed=1, output_type="latent", num_images_per_prompt=2).latents
    assert step.shape == (2, 4, 12, 32, 32) and np.abs(step[0] - step[1]).max() > 0.1  # seeds 1 and 2
    step = step[:1]
    folder = load_pipeline(video_pipeline)
    transformer = open_session(str(video_pipeline / folder.manifest.transformer), "onnxruntime", "cpu")
    components = PipelineComponents(folder, "onnxruntime", "cpu",
                                    open_component=lambda name: transformer if name.endswith("-step.onnx") else
                                    open_session(str(video_pipeline / name), "onnxruntime", "cpu"))
    with PTDiTPipeline.from_components(components) as pipe:
        assert not pipe.transformer.artifact.is_step
        host = pipe(PROMPT, num_inference_steps=3, seed=1, output_type="latent").latents
    assert step.shape == host.shape == (1, 4, 12, 32, 32)
    assert np.linalg.norm(step - host) / np.linalg.norm(host) < 1e-2


def test_ptdit_diff_on_a_video_folder(video_pipeline, tmp_path):
    from click.testing import CliRunner

    from runtime.cli.diff import main

    result = CliRunner().invoke(main, [str(video_pipeline), "--steps", "2", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["components"]) == {"transformer", "step_graph", "text_encoder", "vae 8x32x32", "vae 5x32x32"}
    for shape in ("8x32x32", "5x32x32"):
        entry = report["components"][f"vae {shape}"]
        assert entry["rel_l2"] < 1e-4 and entry["max_rel_l2"] == COMPONENT_MAX_REL_L2["vae_video"]["fp32"]
    video = report["video"]
    assert video["video_frames"] == len(video["psnr_db_per_frame"]) == 45 and "image" not in report
    assert video["worst_frame_psnr_db"] == min(video["psnr_db_per_frame"]) > 40 and report["passed"]


def test_video_refusals(video_pipeline, pipelines, tmp_path):
    """A video folder's --out must be a clip or a folder; an image folder's a PNG; a video folder is served in one
    model, without a step graph; a pipeline.json whose chunks do not cover the clip is refused before anything runs."""
    from ptdit.contract.errors import InputError
    from runtime import PTDiTPipeline

    result = run("runtime", str(video_pipeline), "--prompt", "x", "--out", str(tmp_path / "x.png"))
    assert result.returncode == 2 and "--out must end in .mp4, .webp, .gif, or have no suffix" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()
    result = run("runtime", str(pipelines[256]), "--prompt", "x", "--out", str(tmp_path / "x.mp4"))
    assert result.returncode == 2 and "--out must end in .png" in result.stderr
    result = run("runtime.cli.serve", "repository", str(video_pipeline), "--out", str(tmp_path / "repo"))
    assert result.returncode == 2 and "samples with a step graph (exported with --step)" in result.stderr
    result = run("runtime.cli.serve", "repository", str(video_pipeline), "--out", str(tmp_path / "repo"), "--layout",
                 "components")
    assert result.returncode == 2 and "ptdit-serve serves video pipelines in one model; pass --layout pipeline" in \
        result.stderr
    assert not (tmp_path / "repo").exists()

    folder = tmp_path / "copy"
    shutil.copytree(video_pipeline, folder)
    manifest = json.loads((folder / "pipeline.json").read_text())
    manifest["vae_decoder"]["chunks"] = [[0, 8], [8, 12]]
    (folder / "pipeline.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"its VAE chunks \[\[0, 8\], \[8, 12\]\] are not the published decode's "
                                         r"chunks of 12 latent frames, \[\[0, 8\], \[7, 12\]\]"):
        PTDiTPipeline.from_folder(folder, "onnxruntime", "cpu")

    # the tile plan is checked against the decode rules as the chunks are: an edited one gave a clip of another size
    manifest = json.loads((video_pipeline / "pipeline.json").read_text())
    manifest["vae_decoder"]["plan"].update(factor=4, keep=128)
    (folder / "pipeline.json").write_text(json.dumps(manifest))
    result = run("runtime", str(folder), "--prompt", "x", "--steps", "1", "--out", str(tmp_path / "x.mp4"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert ('its VAE tile plan {"blend": 0, "factor": 4, "keep": 128, "starts": [0], "tile": 32} is not the published '
            'decode\'s plan of a 32x32 latent at 256x256 px, {"blend": 0, "factor": 8, "keep": 256, "starts": [0], '
            '"tile": 32}') in result.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_only_video_chunk_sessions_shrink_the_arena_after_each_run(video_pipeline, pipelines):
    """ONNX Runtime's arena would keep every chunk session's activations (docs/pipelines.md, "Memory"; measured:
    3.0 GB against 1.9 GB for the 12-frame clip); image tiles and the other components keep theirs, as before."""
    from runtime.session import open_session

    key = "memory.enable_memory_arena_shrinkage"
    chunk = json.loads((video_pipeline / "pipeline.json").read_text())["vae_decoder"]["tiles"]["5x32x32"]
    with open_session(str(video_pipeline / chunk), "onnxruntime", "cpu") as session:
        assert session._run_options.get_run_config_entry(key) == "cpu:0"
    tile = json.loads((pipelines[256] / "pipeline.json").read_text())["vae_decoder"]["tiles"]["32x32"]
    with open_session(str(pipelines[256] / tile), "onnxruntime", "cpu") as session:
        with pytest.raises(RuntimeError, match="does not have configuration with key"):
            session._run_options.get_run_config_entry(key)


def test_an_mp4_without_imageio_ffmpeg_is_one_line(video_pipeline, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from runtime.cli.run import main

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if not installed
    result = CliRunner().invoke(main, [str(video_pipeline), "--prompt", "x", "--out", str(tmp_path / "x.mp4")])
    assert result.exit_code == 2 and "writing an .mp4 needs imageio-ffmpeg: pip install imageio-ffmpeg" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.mp4").exists()


def test_writers_that_cannot_write_say_so_before_any_work(monkeypatch):
    """An imageio-ffmpeg without its ffmpeg, a Pillow without WebP: one InputError each, from the check ptdit-run
    makes before it claims --out; suffixes are taken in any case."""
    import imageio_ffmpeg
    from PIL import features

    from ptdit.contract.errors import InputError
    from runtime.pipeline.video_file import check_writer, video_kind

    assert [video_kind(Path(n)) for n in ("a.MP4", "a.webp", "a.Gif", "frames")] == ["mp4", "webp", "gif", "png"]
    with pytest.raises(InputError, match="--out must end in .mp4, .webp, .gif, or have no suffix"):
        video_kind(Path("clip.avi"))

    def no_binary() -> str:
        raise RuntimeError("No ffmpeg exe could be found. Install ffmpeg on your system")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_binary)
    with pytest.raises(InputError, match=r"writing an .mp4 needs ffmpeg: No ffmpeg exe could be found"):
        check_writer("mp4")
    monkeypatch.setattr(features, "check_module", lambda name: name != "webp")
    with pytest.raises(InputError, match="writing a .webp needs a Pillow built with WebP"):
        check_writer("webp")
    check_writer("gif")
    check_writer("png")

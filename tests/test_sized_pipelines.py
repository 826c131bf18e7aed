"""A pipeline folder of two sizes that are not square (16:9 and 9:16 of the 1024 class), from prompt to PNG: the
size asked for drawn as it is, any other drawn at the folder's size nearest in aspect ratio and resized and
centre-cropped to exactly the size asked for (resolution binning), or refused without binning; through ptdit-run
(ONNX Runtime and PyTorch) and PTDiTPipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SIZED, one_error_line, run_command
from ptdit.contract.errors import InputError
from ptdit.contract.sizes import Size, parse_size
from runtime.pipeline.sizes import choose_size, fit_array, fit_image

ROOT = Path(__file__).resolve().parent.parent
FOLDER_SIZES = tuple(parse_size(s) for s in SIZED)


def test_the_size_drawn_is_the_folders_nearest_in_aspect_ratio():
    sizes = FOLDER_SIZES
    assert choose_size(sizes, None, None, True) == sizes[0]  # the default: the folder's first size
    assert choose_size(sizes, 1408, 768, False) == Size(1408, 768)  # held: drawn as it is
    assert choose_size(sizes, 720, 1280, True) == Size(768, 1408)  # 16:9 -> the 16:9 size
    assert choose_size(sizes, 1920, 1080, True) == Size(1408, 768)
    assert choose_size((Size(256, 256), *sizes), 512, 512, True) == Size(256, 256)
    with pytest.raises(InputError, match=r"1280x720 is not a size of this pipeline: it holds 1408x768, 768x1408; "
                                         r"ask for one of them"):
        choose_size(sizes, 720, 1280, False)
    with pytest.raises(InputError, match="pass height and width together"):
        choose_size(sizes, 720, None, True)
    for bad in (722, 0, -8, 8.0, True):
        with pytest.raises(InputError, match="height must be a multiple of 8"):
            choose_size(sizes, bad, 1280, True)


def test_a_picture_is_resized_to_cover_and_centre_cropped():
    from PIL import Image

    # a 768 x 1408 picture whose columns count up: a centred crop of its resize keeps the middle columns
    columns = np.tile(np.linspace(0, 255, 1408, dtype=np.float32).astype(np.uint8), (768, 1))
    image = Image.fromarray(np.stack([columns] * 3, axis=-1), "RGB")
    fitted = fit_image(image, Size(720, 1280))
    assert fitted.size == (1280, 720)  # 768 x 1408 scaled by 0.9375 is 720 x 1320: 20 columns cut each side
    middle = np.asarray(fitted)[360, 640, 0]
    assert abs(int(middle) - 127) <= 2
    assert fit_image(image, Size(768, 1408)) is image
    floats = np.asarray(image, np.float32)[None] / 255
    array = fit_array(floats, Size(720, 1280))
    assert array.shape == (1, 720, 1280, 3) and 0 <= array.min() and array.max() <= 1
    assert np.abs(array[0] - np.asarray(fitted, np.float32) / 255).max() < 0.02  # the same fit, in float


def png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_ptdit_run_draws_any_size_from_a_folder_of_two(sized_pipeline, tmp_path, backend):
    out = tmp_path / "fox.png"
    result = subprocess.run([sys.executable, "-m", "runtime", str(sized_pipeline), "--prompt", "a fox", "--height",
                             "720", "--width", "1280", "--steps", "2", "--backend", backend, "--out", str(out),
                             "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert png_size(out) == (1280, 720)
    assert "1280x720 (drawn at 1408x768, resized and cropped)" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["image"] == [720, 1280, 3] and summary["size"] == "1280x720"


@pytest.mark.slow
def test_the_pipeline_draws_each_size_and_refuses_one_it_lacks_without_binning(sized_pipeline, tmp_path):
    from runtime import PTDiTPipeline

    with PTDiTPipeline.from_folder(sized_pipeline) as pipe:
        assert pipe.sizes == FOLDER_SIZES
        tall = pipe("a fox", num_inference_steps=1, height=1408, width=768).images[0]
        assert tall.size == (768, 1408)
        assert pipe.components is not None and "transformer 768x1408" in pipe.components.sessions
        wide = pipe("a fox", num_inference_steps=1, height=720, width=1280, output_type="np")
        assert wide.images.shape == (1, 720, 1280, 3) and wide.latents.shape == (1, 4, 96, 176)  # drawn at 1408x768
        with pytest.raises(InputError, match="1280x720 is not a size of this pipeline: it holds 1408x768, "
                                             "768x1408.*turned off by use_resolution_binning"):
            pipe("a fox", num_inference_steps=1, height=720, width=1280, use_resolution_binning=False)
    out = tmp_path / "fox.png"
    refused = run_command("runtime", str(sized_pipeline), "--prompt", "a fox", "--height", "720", "--width", "1280",
                          "--no-resolution-binning", "--out", str(out))
    assert refused.returncode == 2 and not out.exists()
    assert "1280x720 is not a size of this pipeline: it holds 1408x768, 768x1408; ask for one of them, or draw the " \
           "nearest and crop it with resolution binning (the default, turned off by --no-resolution-binning)" \
           in one_error_line(refused, "ptdit-run")


@pytest.mark.slow
def test_ptdit_diff_judges_every_size(sized_pipeline, tmp_path):
    from runtime.diff.api import diff_artifact

    lines: list[str] = []
    report = diff_artifact(sized_pipeline, prompt="a fox", steps=2, out_dir=tmp_path, progress=lines.append).report
    assert {"transformer", "transformer 768x1408"} <= set(report["components"])
    for key in ("image", "image 768x1408"):
        assert report[key]["psnr_db"] >= report[key]["min_psnr_db"] and report[key]["steps"] == 2
    assert report["passed"] and any("the whole pipeline at 768x1408" in line for line in lines)


@pytest.mark.slow
def test_a_video_pipeline_at_a_size_that_is_not_square(tmp_path):
    """--frames with a 16:9 size of the 256 class, sampled with its step graph: every component builds with
    TensorRT-RTX (the causal chunk decoders of 24 x 44 latents among them) and the clip is 352 x 192."""
    import importlib.util

    made = run_command("export", "--preset", "tiny", "--size", "352x192", "--frames", "4", "--step", "--pipeline",
                       "--out", str(tmp_path))
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "ptdit-tiny-352x192-f4-pipeline"
    manifest = json.loads((folder / "pipeline.json").read_text())
    assert [(s["height"], s["width"]) for s in manifest["sizes"]] == [(192, 352)]
    assert sorted(manifest["vae_decoder"]["tiles"]) == ["4x24x44"]  # one chunk, one tile
    frames = tmp_path / "frames"
    ran = subprocess.run([sys.executable, "-m", "runtime", str(folder), "--prompt", "a fox", "--steps", "2", "--out",
                          str(frames)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    assert len(list(frames.glob("*.png"))) == 13 and png_size(sorted(frames.glob("*.png"))[0]) == (352, 192)
    if importlib.util.find_spec("tensorrt_rtx") is None:
        return  # tests/engines builds with it where it is installed (CI)
    for name in [manifest["transformer"], manifest["step_graph"], manifest["text_encoder"]["onnx"],
                 *manifest["vae_decoder"]["tiles"].values()]:
        precision = json.loads((folder / name).with_suffix(".json").read_text())["export"]["precision"]
        extra = ["--allow-fp32"] if precision == "fp32" else []
        built = run_command("engines", str(folder / name), "--target", "rtx", "--out", str(tmp_path / "plans"),
                            *extra)
        assert built.returncode == 0, built.stderr

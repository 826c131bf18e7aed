"""Prompt in, image out: the CausalVAE decoder reference, ptdit-export --pipeline, ptdit-run on a pipeline folder
(ONNX Runtime and PyTorch), ptdit-diff on it, loading real-format weights, and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ptdit.contract.onnx_manifest import Weights
from ptdit.vae import VAE_PRESETS, CausalVAEDecoder

ROOT = Path(__file__).resolve().parents[2]


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True)


def test_one_frame_runs_the_decoder_folded_to_2d():
    """For one latent frame each CausalConv3d is a Conv2d with its kernel summed over time and the space-time
    upsampling is bilinear in space: the 2D network equals the 3D one on a one-frame video."""
    decoder = CausalVAEDecoder(VAE_PRESETS["tiny"]).eval()
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        image = decoder(latent)
        video = decoder(latent[:, :, None])
        frames = decoder(torch.randn(1, 4, 3, 8, 8))
    assert image.shape == (1, 3, 64, 64) and video.shape == (1, 3, 1, 64, 64)
    assert float((image - video[:, :, 0]).norm() / video.norm()) < 1e-5
    assert frames.shape == (1, 3, 9, 64, 64)  # 1 + 4 (T - 1) frames


def test_the_decoder_has_the_published_parameter_names_and_size():
    decoder = CausalVAEDecoder(VAE_PRESETS["causalvae-v1.2"])
    state = decoder.state_dict()
    assert sum(v.numel() for v in state.values()) == 144_790_551  # Open-Sora-Plan v1.2.0's decoder + post_quant_conv
    assert state["decoder.up.1.upsample.conv.conv.weight"].shape == (256, 256, 1, 3, 3)
    assert state["decoder.up.3.upsample.conv.conv.weight"].shape == (512, 512, 3, 3, 3)
    assert state["decoder.up.0.block.0.nin_shortcut.conv.weight"].shape == (128, 256, 1, 1, 1)
    assert state["decoder.mid.attn_1.proj_out.conv.weight"].shape == (512, 512, 1, 1, 1)
    assert "decoder.up.3.block.0.nin_shortcut.conv.weight" not in state and len(state) == 140


def test_pipeline_folder_contents_and_checks(pipelines):
    folder = pipelines[1024]
    manifest = json.loads((folder / "pipeline.json").read_text())
    assert manifest["schema"] == "ptdit-pipeline/1" and manifest["transformer"] == "ptdit-tiny-1024-b2-fp16.onnx"
    assert manifest["vae_decoder"]["plan"] == {"starts": [0, 56, 112], "tile": 64, "factor": 8, "blend": 64,
                                               "keep": 448}
    assert sorted(manifest["vae_decoder"]["tiles"]) == ["16x16", "16x64", "64x16", "64x64"]
    assert set(manifest["sha256"]) == {p.name for p in folder.iterdir() if p.name != "pipeline.json"}
    negative = np.load(folder / "negative.npz")
    assert negative["text_embeds"].shape == (200, 4096) and int(negative["text_mask"].sum()) == 1
    for name in [manifest["text_encoder"]["onnx"], *manifest["vae_decoder"]["tiles"].values()]:
        checks = json.loads((folder / name).with_suffix(".json").read_text())["checks"]
        assert checks["tensorrt_ops"]["max_rank"] <= 8 and checks["static_shapes"]["passed"]
        assert checks["onnxruntime_parity"]["passed"]
        parse = checks["tensorrt_parse"]
        assert parse["passed"] is (True if parse["ran"] else None)
        scope = checks["onnxruntime_parity"]["scope"]
        assert scope == ("cut to its first layer" if name.startswith("text-encoder") else "whole component")
    assert manifest["text_encoder"]["rel_l2"] < 2e-2  # fp16 T5 with its fp32 islands against fp32 PyTorch
    assert json.loads((pipelines[256] / "pipeline.json").read_text())["vae_decoder"]["plan"]["starts"] == [0]


@pytest.mark.parametrize("res", [256, 1024])
def test_prompt_to_png_is_deterministic(pipelines, tmp_path, res):
    from PIL import Image

    outs = [tmp_path / "a.png", tmp_path / "b.png"]
    for out in outs:
        result = run("runtime", str(pipelines[res]), "--prompt", "a red fox", "--steps", "6", "--out",
                     str(out), "--json")
        assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["image"] == [res, res, 3] and set(summary["seconds"]) == {"encode", "sample", "decode"}
    assert outs[0].read_bytes() == outs[1].read_bytes()
    image = Image.open(outs[0])
    assert image.size == (res, res) and image.mode == "RGB" and image.text["prompt"] == "a red fox"
    other = tmp_path / "c.png"
    assert run("runtime", str(pipelines[res]), "--prompt", "a blue fox", "--steps", "6", "--out",
               str(other)).returncode == 0
    assert other.read_bytes() != outs[0].read_bytes()


def test_the_pytorch_backend_draws_the_same_image(pipelines):
    from runtime import PTDiTPipeline
    from runtime.diff.metrics import psnr

    images = []
    for backend in ("onnxruntime", "torch"):
        with PTDiTPipeline.from_folder(pipelines[256], backend, "cpu",
                                       torch_precision="fp32" if backend == "torch" else None) as pipe:
            images.append(np.asarray(pipe("a red fox", num_inference_steps=4, seed=1).images[0]))
    assert psnr(images[0], images[1]) > 40


def test_ptdit_diff_on_a_pipeline_folder(pipelines, tmp_path):
    from click.testing import CliRunner

    from runtime.cli.diff import main

    result = CliRunner().invoke(main, [str(pipelines[256]), "--steps", "4", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == json.loads((tmp_path / "ptdit-tiny-256-pipeline.diff.json").read_text())
    assert set(report["components"]) == {"transformer", "text_encoder", "vae 32x32"}
    assert report["components"]["vae 32x32"]["rel_l2"] < 1e-5 and report["components"]["text_encoder"]["rel_l2"] < 1e-2
    assert report["image"]["psnr_db"] > 40 and report["passed"]


@pytest.mark.parametrize("args,message", [
    (["--random-text"], "a pipeline folder takes --prompt"),
    ([], "a pipeline folder needs --prompt"),
    (["--prompt", "x", "--out-npy"], "--out must end in .png"),
])
def test_pipeline_run_refusals(pipelines, tmp_path, args, message):
    out = tmp_path / ("x.npy" if "--out-npy" in args else "x.png")
    args = [a for a in args if a != "--out-npy"]
    result = run("runtime", str(pipelines[256]), *args, "--out", str(out))
    assert result.returncode == 2 and message in result.stderr and not out.exists()
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_tampered_pipeline_and_prompts_for_plain_artifacts_are_refused(pipelines, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(pipelines[256], folder)
    (folder / "tokenizer.json").write_text("{}")
    result = run("runtime", str(folder), "--prompt", "x", "--out", str(tmp_path / "x.png"))
    assert result.returncode == 2 and "tokenizer.json does not match pipeline.json" in result.stderr
    onnx_path = pipelines[256] / "ptdit-tiny-256-b2-fp16.onnx"
    result = run("runtime", str(onnx_path), "--prompt", "x", "--out", str(tmp_path / "x.npy"))
    assert result.returncode == 2 and "--prompt needs a pipeline folder" in result.stderr


@pytest.mark.slow  # exports a pipeline of real-format weights
def test_a_hugging_face_t5_folder_and_a_vae_checkpoint_are_loaded(tmp_path):
    """Weights in their published formats: a T5 encoder folder (config.json, model.safetensors, tokenizer.json)
    as transformers writes it, loaded on the meta device; a whole-VAE checkpoint, encoder entries ignored."""
    from safetensors.torch import save_file

    from export.pipeline.tokenizer import standin_tokenizer
    from ptdit.t5 import T5_PRESETS, T5Encoder, load_hf_t5
    from ptdit.vae import load_vae

    cfg = T5_PRESETS["tiny"]
    source = T5Encoder(cfg, seed=3)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "feed_forward_proj": "gated-gelu",
                                                      **{k: v for k, v in cfg.to_dict().items() if k != "name"}}))
    state = {k: v.half().contiguous() for k, v in source.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(state, str(tmp_path / "model.safetensors"))
    standin_tokenizer(cfg.vocab_size).save(str(tmp_path / "tokenizer.json"))
    loaded = load_hf_t5(tmp_path)
    assert loaded.dtype == torch.float16 and loaded.encoder.embed_tokens is loaded.shared
    torch.testing.assert_close(loaded.shared.weight, source.shared.weight.half())
    result = run("export", "--preset", "tiny", "--res", "256", "--pipeline", "--text-encoder", str(tmp_path),
                 "--checks", "none", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    manifest = json.loads(next((tmp_path / "out").glob("*/text-encoder-*.json")).read_text())
    from export.pipeline.components import folder_sha256

    assert manifest["model"]["weights"] == {"source": "checkpoint", "path": str(tmp_path),
                                            "sha256": folder_sha256(tmp_path)}
    again = run("export", "--preset", "tiny", "--res", "256", "--pipeline", "--text-encoder", str(tmp_path),
                "--checks", "none", "--out", str(tmp_path / "out"))
    assert again.returncode == 0 and "up to date: " in again.stdout
    save_file({k: v + 1 for k, v in state.items()}, str(tmp_path / "model.safetensors"))  # new weights, same path
    changed = run("export", "--preset", "tiny", "--res", "256", "--pipeline", "--text-encoder", str(tmp_path),
                  "--checks", "none", "--out", str(tmp_path / "out"))
    assert changed.returncode == 2 and "was exported from other weights: it is stale" in changed.stderr

    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}}, tmp_path / "vae.ckpt")
    from ptdit.contract.errors import InputError

    with pytest.raises(InputError, match="not the Open-Sora-Plan v1.2 CausalVAE"):
        load_vae(tmp_path / "vae.ckpt")


def test_the_tensorrt_backend_takes_the_plans_built_into_the_folder(pipelines, tmp_path):
    import shutil

    from ptdit.contract.errors import InputError
    from runtime.pipeline.folder import component_path, load_pipeline

    shutil.copytree(pipelines[256], tmp_path / "p")
    folder = load_pipeline(tmp_path / "p")
    name = folder.manifest.text_encoder.onnx
    assert component_path(folder, name, "onnxruntime") == tmp_path / "p" / name
    with pytest.raises(InputError, match=f"no plan of {name} .*: build one with ptdit-build"):
        component_path(folder, name, "tensorrt")
    stem = name.removesuffix(".onnx")
    for suffix in ("-portable-rtx1.7-blocks.plan", "-portable-rtx1.7.plan"):
        (tmp_path / "p" / f"{stem}{suffix}").write_bytes(b"")
    assert component_path(folder, name, "tensorrt").name == f"{stem}-portable-rtx1.7.plan"


def test_an_fp16_vae_tile_stays_within_one_level_of_255(tmp_path):
    """--vae-precision fp16 (GroupNorm kept fp32): the tile's pixels through ONNX Runtime within 1/255 of the
    fp32 decoder with the same weights."""
    from export.options import PipelineOptions
    from export.pipeline.components import export_vae_tile
    from export.progress import Stages

    name = export_vae_tile(CausalVAEDecoder(VAE_PRESETS["tiny"]).eval(), Weights("seeded", seed=0), (32, 32),
                           PipelineOptions(vae_precision="fp16"), tmp_path, Stages(lambda line: None), "fast")
    parity = json.loads((tmp_path / name).with_suffix(".json").read_text())["checks"]["onnxruntime_parity"]
    assert parity["passed"] and parity["vs_torch_fp32"]["max_abs"] * 127.5 < 1.0  # [-1, 1] maps to 255 levels


@pytest.mark.parametrize("args,message", [
    (["--text-encoder", "{tmp}"], "--text-encoder goes with --pipeline: add --pipeline, or drop it"),
    (["--pipeline", "--frames", "6"], "unsupported frame count 6: video needs a latent frame count that is a positive"),
    (["--pipeline", "--text-encoder", "{tmp}"], "is not a Hugging Face T5 folder (no config.json)"),
    (["--pipeline", "--vae", "{tmp}/missing.ckpt"], "missing.ckpt does not exist"),
])
def test_pipeline_export_refusals_leave_nothing(tmp_path, args, message):
    from click.testing import CliRunner

    from export.cli import main

    out = tmp_path / "out" / "deeper"
    result = CliRunner().invoke(main, ["--preset", "tiny", "--res", "256",
                                       *[a.replace("{tmp}", str(tmp_path)) for a in args], "--out", str(out)])
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_existing_pipeline_folder_needs_force(tmp_path):
    from click.testing import CliRunner

    from export.cli import main

    (tmp_path / "ptdit-tiny-256-pipeline").mkdir()
    result = CliRunner().invoke(main, ["--preset", "tiny", "--res", "256", "--pipeline", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "ptdit-tiny-256-pipeline cannot be used (no pipeline.json)" in result.stderr
    assert "it is stale and is not reused; pass --force to replace it" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["ptdit-tiny-256-pipeline"]


@pytest.mark.slow  # exports a step pipeline
def test_a_step_pipeline_samples_with_its_step_graph_and_is_reused_or_refused(tmp_path):
    """--pipeline --step: the folder holds both graphs and samples with the step graph (the image of the noise graph's
    host loop to the fp16 graphs' precision); asked again the same way it is reused, without --step it is stale; it
    is not served (ptdit-serve serves the noise-prediction pipeline)."""
    from runtime import PTDiTPipeline
    from runtime.diff.metrics import psnr
    from runtime.pipeline.folder import load_pipeline
    from runtime.pipeline.text_to_image import PipelineComponents
    from runtime.session import open_session

    args = ["--preset", "tiny", "--res", "256", "--pipeline", "--checks", "none", "--out", str(tmp_path)]
    assert run("export", *args, "--step").returncode == 0
    folder = tmp_path / "ptdit-tiny-256-pipeline"
    manifest = json.loads((folder / "pipeline.json").read_text())
    assert manifest["step_graph"] == "ptdit-tiny-256-b2-fp16-step.onnx" and (folder / manifest["step_graph"]).is_file()
    with PTDiTPipeline.from_folder(folder, "onnxruntime", "cpu") as pipe:
        assert pipe.transformer.artifact.is_step
        step = np.asarray(pipe("a red fox", num_inference_steps=4, seed=1).images[0])
    noise = open_session(str(folder / manifest["transformer"]), "onnxruntime", "cpu")
    components = PipelineComponents(load_pipeline(folder), "onnxruntime", "cpu", open_component=lambda name: noise
                                    if name == manifest["step_graph"] else open_session(str(folder / name),
                                                                                         "onnxruntime", "cpu"))
    with PTDiTPipeline.from_components(components) as pipe:
        host = np.asarray(pipe("a red fox", num_inference_steps=4, seed=1).images[0])
    assert psnr(step, host) > 40
    again = run("export", *args, "--step")
    assert again.returncode == 0 and "is up to date" in again.stdout + again.stderr
    stale = run("export", *args)
    assert stale.returncode == 2 and "was exported with --step: it is stale" in stale.stderr
    served = run("runtime.cli.serve", "repository", str(folder), "--out", str(tmp_path / "repo"))
    assert served.returncode == 2 and "samples with a step graph (exported with --step)" in served.stderr


def test_a_folder_whose_decoders_are_not_the_published_decode_s_is_stale(pipelines, tmp_path):
    """pipeline.json naming other VAE decoder shapes than the resolution's published decode needs (the files all
    match it): ptdit-export calls the folder stale before any work."""
    import shutil

    from click.testing import CliRunner

    from export.cli import main

    folder = tmp_path / "ptdit-tiny-256-pipeline"
    shutil.copytree(pipelines[256], folder)
    manifest = json.loads((folder / "pipeline.json").read_text())
    manifest["vae_decoder"]["tiles"] = {"16x16": manifest["vae_decoder"]["tiles"]["32x32"]}
    (folder / "pipeline.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(main, ["--preset", "tiny", "--res", "256", "--pipeline", "--out", str(tmp_path)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "holds VAE decoders of ['16x16'], its decode needs ['32x32']: it is stale" in result.stderr

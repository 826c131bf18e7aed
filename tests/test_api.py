"""The Python face: export_model / export_pipeline, build_engine, PTDiTPipeline (README "From Python",
docs/python.md); re-runs that reuse what is up to date and refuse what is stale; errors that name the caller's
parameters; the options every command shares (-q, the ARTIFACT argument, --json, help on every option)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from engines import build_engine
from export import export_model, export_pipeline
from ptdit.contract.errors import InputError, flag_of, option
from runtime import PTDiTPipeline

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> list:
    """tiny at 256, fp16, the noise-prediction graph and its step graph, through the Python API."""
    return export_model(256, preset="tiny", step=True, checks="none", out_dir=tmp_path_factory.mktemp("api"))


def cli(module: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True)


def test_export_model_gives_typed_results_and_reuses_what_is_up_to_date(graphs, caplog):
    noise, step = graphs
    assert noise.path.name == "ptdit-tiny-256-b2-fp16.onnx" and step.path.name == "ptdit-tiny-256-b2-fp16-step.onnx"
    assert noise.manifest.export.graph == "noise_prediction" and step.manifest.export.graph == "step"
    assert not noise.up_to_date and noise.files[-1] == noise.manifest_path
    before = {p: p.stat().st_mtime_ns for p in noise.files + step.files}
    with caplog.at_level(logging.INFO, logger="export"):  # no progress callable: the `export` logger
        again = export_model(256, preset="tiny", step=True, checks="none", out_dir=noise.path.parent)
    assert [r.up_to_date for r in again] == [True, True] and [r.path for r in again] == [noise.path, step.path]
    assert {p: p.stat().st_mtime_ns for p in noise.files + step.files} == before  # nothing was written again
    assert "is up to date" in caplog.text
    lines: list[str] = []
    with pytest.raises(InputError, match=r"other settings \(weights differ\): it is stale .* pass force=True"):
        export_model(256, preset="tiny", seed=1, checks="none", out_dir=noise.path.parent, progress=lines.append)
    # a check level above the one recorded is not up to date either
    with pytest.raises(InputError, match="was checked at level none, and fast is asked for"):
        export_model(256, preset="tiny", checks="fast", out_dir=noise.path.parent)


def test_step_is_added_beside_an_up_to_date_noise_graph(tmp_path):
    first = export_model(256, preset="tiny", batch=1, checks="none", out_dir=tmp_path)
    mtime = first[0].path.stat().st_mtime_ns
    lines: list[str] = []
    noise, step = export_model(256, preset="tiny", batch=1, step=True, checks="none", out_dir=tmp_path,
                               progress=lines.append)
    assert noise.up_to_date and not step.up_to_date and step.manifest.export.graph == "step"
    assert noise.path.stat().st_mtime_ns == mtime and any("is up to date" in line for line in lines)


def test_another_checkpoint_key_is_other_weights(tmp_path):
    import torch

    from ptdit import PTDiT, preset

    weights = PTDiT(preset("tiny"), seed=1).state_dict()
    checkpoint = tmp_path / "nested.pt"
    torch.save({"model": weights, "ema": {k: v + 1 for k, v in weights.items()}}, checkpoint)
    options = dict(preset="tiny", checkpoint=checkpoint, checks="none", out_dir=tmp_path / "out")
    (first,) = export_model(256, checkpoint_key="model", **options)
    assert first.manifest.model.weights.key == "model"
    assert export_model(256, checkpoint_key="model", **options)[0].up_to_date
    with pytest.raises(InputError, match=r"\(weights differ\): it is stale"):
        export_model(256, checkpoint_key="ema", **options)


def test_a_corrupt_export_is_stale_not_reused(tmp_path):
    (result,) = export_model(256, preset="tiny", checks="none", out_dir=tmp_path)
    with open(result.path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(InputError, match=r"cannot be used \(.*sha256 differs.*it is stale"):
        export_model(256, preset="tiny", checks="none", out_dir=tmp_path)


def test_api_errors_name_parameters_and_the_commands_name_flags(graphs, tmp_path):
    with pytest.raises(InputError, match=r"^resolution must be one of 256, 512, 1024, 2048, got 300$"):
        export_model(300, preset="tiny")
    with pytest.raises(InputError, match=r"^text_len must be an integer in \[1, 4096\], got 0$"):
        export_model(256, preset="tiny", text_len=0, out_dir=tmp_path)
    with pytest.raises(InputError, match=r"^target must be one of auto, tensorrt, rtx, got 'gpu'$"):
        build_engine(graphs[0].path, target="gpu")
    with pytest.raises(InputError, match=r"^tiling_level must be one of"):
        build_engine(graphs[0].path, tiling_level="max")
    result = cli("export", "--preset", "tiny", "--res", "256", "--checkpoint-key", "a", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "--checkpoint-key names a state dict inside --checkpoint: pass --checkpoint too" in result.stderr
    error = InputError(f"pass {option('guidance', 1)} and {option('force', True)}, not {option('text_len')}")
    assert str(error) == "pass guidance=1 and force=True, not text_len"
    assert error.render() == "pass --guidance 1 and --force, not --text-len"
    assert error.render(lambda name: {"guidance": "--cfg"}.get(name) or flag_of(name)) == \
        "pass --cfg 1 and --force, not --text-len"
    assert str(error.renamed({"guidance": "guidance_scale"})) == "pass guidance_scale=1 and force=True, not text_len"


def test_build_engine_builds_and_reuses(graphs, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    lines: list[str] = []
    engine = build_engine(str(graphs[0].path), target="rtx", out_dir=tmp_path, progress=lines.append)
    assert engine.path == tmp_path / "ptdit-tiny-256-b2-fp16-portable-rtx1.7.plan" and engine.path.is_file()
    assert engine.manifest.builder.target == "rtx" and not engine.up_to_date and any("built in" in x for x in lines)
    again = build_engine(graphs[0].path, target="rtx", out_dir=tmp_path, progress=lines.append)
    assert again.up_to_date and again.manifest.plan.sha256 == engine.manifest.plan.sha256
    with pytest.raises(InputError, match=r"^compute_capabilities '9' is not MAJOR.MINOR"):
        build_engine(graphs[0].path, target="rtx", compute_capabilities="9", out_dir=tmp_path)


def test_pipeline_from_a_folder_as_diffusers_users_expect(pipelines, tmp_path):
    folder = str(pipelines[256])  # a str path works
    seen: list[tuple[int, float, tuple[int, ...]]] = []
    tiles: list[int] = []
    with PTDiTPipeline.from_folder(folder, backend="onnxruntime") as pipe:
        out = pipe(["a red fox", "a cat"], negative_prompt="", num_inference_steps=3, guidance_scale=4.0, seed=5,
                   num_images_per_prompt=2, callback_on_step_end=lambda i, t, x: seen.append((i, t, x.shape)),
                   on_tile=lambda: tiles.append(1))
        first = pipe("a red fox", negative_prompt="", num_inference_steps=3, seed=5)
        as_np = pipe("a red fox", negative_prompt="", num_inference_steps=3, seed=5, output_type="np")
        latent = pipe("a red fox", negative_prompt="", num_inference_steps=3, seed=5, output_type="latent")
        stored = pipe("a red fox", num_inference_steps=3, seed=5, output_type="latent")  # the stored negative
        with pytest.raises(InputError, match=r"^num_inference_steps must be an integer in \[1, 1000\], got 0$"):
            pipe("a red fox", num_inference_steps=0)
        with pytest.raises(InputError, match=r"^output_type must be one of pil, np, latent, got 'pt'$"):
            pipe("a red fox", output_type="pt")  # type: ignore[arg-type]
        with pytest.raises(InputError, match=r"^2 negative prompts for 1 prompts"):
            pipe("a red fox", negative_prompt=["", "x"])
        with pytest.raises(InputError, match=r"^pass prompt or prompt_embeds, one of them$"):
            pipe()
        with pytest.raises(InputError, match=r"^seed \+ the number of images - 1 must be"):
            pipe("a", seed=2 ** 32 - 1, num_images_per_prompt=2)
    assert pipe.components is not None and not pipe.components.sessions  # closed by the with block
    assert len(out.images) == 4 and all(isinstance(im, Image.Image) and im.size == (256, 256) for im in out.images)
    assert out.latents.shape == (4, 4, 32, 32) and set(out.timings) == {"encode", "sample", "decode"}
    assert [s[0] for s in seen] == [0, 1, 2] * 4 and seen[0][1] == 1000.0 and seen[0][2] == (1, 4, 32, 32)
    assert len(tiles) == 4  # one tile per image at 256
    # image 0 starts from seed 5, image 1 from seed 6: the same prompt's two images differ
    assert not np.array_equal(out.latents[0], out.latents[1])
    np.testing.assert_array_equal(np.asarray(out.images[0]), np.asarray(first.images[0]))
    np.testing.assert_array_equal(out.latents[0], latent.latents[0])
    assert latent.images is None and as_np.images.shape == (1, 256, 256, 3) and as_np.images.dtype == np.float32
    np.testing.assert_allclose(np.round(as_np.images[0] * 255), np.asarray(first.images[0]), atol=1)
    # what ptdit-run writes for the same prompt and seed is that image, byte for byte in its pixels
    assert not np.array_equal(stored.latents, latent.latents)  # "" in fp16 through T5 is not the stored fp32 one
    result = cli("runtime", folder, "--prompt", "a red fox", "--negative-prompt", "", "--steps", "3",
                 "--seed", "5", "--out", str(tmp_path / "fox.png"), "-q")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "fox.png")), np.asarray(first.images[0]))


def test_pipeline_from_a_transformer_artifact_takes_text_features(graphs):
    noise, step = graphs
    rng = np.random.default_rng(0)
    embeds = rng.standard_normal((2, 200, 4096), dtype=np.float32)
    mask = np.ones((2, 200), np.int64)
    for artifact in (noise.path, step.path):
        with PTDiTPipeline.from_artifact(artifact) as pipe:
            out = pipe(prompt_embeds=embeds, prompt_attention_mask=mask, num_inference_steps=3, seed=2)
            steps: list[np.ndarray] = []
            one = pipe(prompt_embeds=embeds[0], num_inference_steps=3, seed=2,
                       callback_on_step_end=lambda i, t, x: steps.append(x))  # noqa: B023 (called within the iteration)
            with pytest.raises(InputError, match=r"^prompt needs a text encoder"):
                pipe("a red fox")
            with pytest.raises(InputError, match=r"^output_type='pil' needs a VAE decoder"):
                pipe(prompt_embeds=embeds, output_type="pil")
            with pytest.raises(InputError, match=r"^the features of prompt_embeds are \[10, 4096\]"):
                pipe(prompt_embeds=embeds[0, :10])
            with pytest.raises(InputError, match=r"^negative_prompt needs a text encoder.*negative_prompt_embeds"):
                pipe(prompt_embeds=embeds, negative_prompt="")
            with pytest.raises(InputError, match=r"^negative_prompt_attention_mask goes with negative_prompt_embeds"):
                pipe(prompt_embeds=embeds, negative_prompt_attention_mask=mask[0])
            shared = pipe(prompt_embeds=embeds, prompt_attention_mask=mask[0], num_inference_steps=3, seed=2)
            np.testing.assert_array_equal(shared.latents, out.latents)  # one [L] mask for every prompt
        assert out.images is None and out.latents.shape == (2, 4, 32, 32)
        np.testing.assert_array_equal(one.latents[0], out.latents[0])
        np.testing.assert_array_equal(steps[-1], one.latents)  # the callback's last latent is the result
        if artifact == noise.path:
            noise_latents = out.latents
    np.testing.assert_allclose(out.latents, noise_latents, atol=1e-5)  # the step loop gives the host loop's latents
    with pytest.raises(InputError, match="is a file: .*PTDiTPipeline.from_artifact"):
        PTDiTPipeline.from_folder(noise.path)


def test_export_pipeline_reuses_an_up_to_date_folder(pipelines):
    lines: list[str] = []
    (folder,) = export_pipeline(256, preset="tiny", out_dir=pipelines[256].parent, progress=lines.append)
    assert folder.up_to_date and folder.path == pipelines[256] and folder.manifest.resolution == 256
    with pytest.raises(InputError,
                       match=r"vae-decoder-.*-fp32.json was exported in fp32, and fp16 is asked for: .*force=True"):
        export_pipeline(256, preset="tiny", out_dir=pipelines[256].parent, vae_precision="fp16")


def test_a_diff_report_is_reused_when_up_to_date_and_refused_when_stale(graphs, tmp_path):
    from runtime.cli.diff import main as diff

    args = [str(graphs[0].path), "--steps", "2", "--out", str(tmp_path)]
    first = CliRunner().invoke(diff, [*args, "--json"])
    assert first.exit_code == 0, first.output
    report = tmp_path / "ptdit-tiny-256-b2-fp16.diff.json"
    mtime = report.stat().st_mtime_ns
    again = CliRunner().invoke(diff, [*args, "--json"])
    assert again.exit_code == 0 and "is up to date" in again.stderr and report.stat().st_mtime_ns == mtime
    assert json.loads(again.stdout) == json.loads(first.stdout) == json.loads(report.read_text())
    stale = CliRunner().invoke(diff, [*args, "--steps", "3"])  # another trajectory length
    assert stale.exit_code == 2 and "was measured with other options (steps differ)" in stale.stderr
    assert "pass --force to measure again" in stale.stderr
    forced = CliRunner().invoke(diff, [*args, "--steps", "3", "--force"])
    assert forced.exit_code == 0 and report.stat().st_mtime_ns != mtime
    # a reused report is only handed back for the files it measured
    with open(graphs[0].path, "ab") as f:
        f.write(b"\0")
    try:
        changed = CliRunner().invoke(diff, [*args, "--steps", "3"])
        assert changed.exit_code == 2 and "the files changed since the report was made" in changed.stderr
    finally:
        with open(graphs[0].path, "r+b") as f:
            f.truncate(graphs[0].path.stat().st_size - 1)


def test_outputs_never_land_in_the_toolkit_packages(graphs):
    pytest.importorskip("tensorrt_rtx")  # the builder is chosen before the outputs are claimed
    result = cli("engines", str(graphs[0].path), "--target", "rtx", "--out", "engines/")
    assert result.returncode == 2 and "inside this toolkit's package" in result.stderr
    assert not list((ROOT / "engines").glob("*.plan"))


def test_quiet_and_the_artifact_argument(graphs, tmp_path):
    quiet = cli("runtime", str(graphs[0].path), "--random-text", "--steps", "2", "--out",
                str(tmp_path / "a.npy"), "-q")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout.startswith("wrote")
    verbose = cli("runtime", str(graphs[0].path), "--random-text", "--steps", "2", "--out",
                  str(tmp_path / "b.npy"), "-v")
    assert "sampling: step 2/2" in verbose.stderr
    old = cli("runtime", "--artifact", str(graphs[0].path), "--random-text", "--steps", "2", "--out",
              str(tmp_path / "c.npy"), "-q")
    assert old.returncode == 0 and "--artifact is deprecated" in old.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "c.npy"))
    missing = cli("runtime", "--out", str(tmp_path / "d.npy"))
    assert missing.returncode == 2 and "missing ARTIFACT" in missing.stderr


def test_every_option_of_every_command_has_help():
    from bench.cli import main as bench
    from engines.cli import main as build
    from export.cli import main as export
    from runtime.bench import main as runtime_bench
    from runtime.cli.cache import main as cache
    from runtime.cli.diff import main as diff
    from runtime.cli.run import main as run
    from runtime.cli.serve import main as serve
    from runtime.serve.load import main as serve_load

    commands: dict[str, click.Command] = {"ptdit-export": export, "ptdit-build": build, "ptdit-run": run,
                                          "ptdit-diff": diff, "ptdit-bench": bench, "runtime.bench": runtime_bench,
                                          "ptdit-serve": serve, "runtime.serve.load": serve_load}
    commands.update({f"ptdit-bench {name}": c for name, c in bench.commands.items()})
    commands.update({f"ptdit-serve {name}": c for name, c in serve.commands.items()})
    commands.update({f"ptdit-cache {name}": c for name, c in cache.commands.items()})
    missing = [f"{name} {p.opts[0]}" for name, c in commands.items() for p in c.params
               if isinstance(p, click.Option) and not p.hidden and not p.help]
    assert missing == []
    for name in ("ptdit-export", "ptdit-build", "ptdit-run", "ptdit-diff", "ptdit-bench"):
        options = {o for p in commands[name].params for o in p.opts}
        assert {"-q", "-v", "--version"} <= options, name
    for name in ("ptdit-cache calibrate", "ptdit-cache measure"):
        assert {"-q", "-v", "--version", "--json", "--debug"} <= {o for p in commands[name].params for o in p.opts}
    for name in ("ptdit-export", "ptdit-build", "ptdit-run", "ptdit-diff"):
        assert {"--json", "--force", "--debug"} <= {o for p in commands[name].params for o in p.opts}, name
    for name in ("ptdit-build", "ptdit-run", "ptdit-diff"):  # ptdit-export makes its input (--res, --preset)
        assert isinstance(commands[name].params[0], click.Argument), f"{name}: the input is the first argument"
    help_text = CliRunner().invoke(bench, ["build", "--help"]).output
    assert "[auto|tensorrt|rtx]" in help_text and "[fp32|fp16|bf16|fp8]" in help_text

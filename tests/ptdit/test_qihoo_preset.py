"""The `qihoo-t2x` preset, written from what the published Qihoo-T2X image model's configuration and code do
(examples/qihoo_t2x/inference_model_image.json and pt_dit_diffusers.py in Ascend/MindSpeed-MM)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from test_checkpoint import published_layout

from conftest import model_inputs
from ptdit import InputError, PTDiT, load_checkpoint, preset, window_for
from ptdit.layers import sinusoid_frequencies

ROOT = Path(__file__).resolve().parents[2]


def small(**changes) -> PTDiT:
    """The preset's behaviour at a size a CPU test can afford (depth and width are not what is tested)."""
    cfg = preset("qihoo-t2x").replace(depth=1, num_heads=2, head_dim=32, text_dim=64, **changes)
    return PTDiT(cfg, seed=3)


def test_the_preset_has_the_published_settings():
    cfg = preset("qihoo-t2x")
    assert (cfg.depth, cfg.num_heads, cfg.head_dim, cfg.patch_size) == (28, 16, 72, 2)
    assert (cfg.in_channels, cfg.out_channels, cfg.text_dim, cfg.mlp_ratio) == (4, 8, 4096, 4)
    assert cfg.norm_eps == 1e-6 and not cfg.norm_affine and cfg.attention_bias and cfg.shift_window
    assert cfg.window == (1, 8, 8) and cfg.proxy_window == (1, 8, 8)
    assert cfg.proxy_mode == "mean" and cfg.train_proxy_mode == "mean"
    assert cfg.mask_value == -10000.0
    assert cfg.sample_size == 32 and cfg.pe_interpolation_scale == 1 and not cfg.size_conditioning
    assert PTDiT(cfg.replace(depth=1)).num_parameters() == PTDiT(preset("xl").replace(depth=1)).num_parameters()


@pytest.mark.parametrize("res", [256, 512, 1024, 2048])
def test_windows_are_8x8_at_every_resolution(res):
    side = res // 8
    assert small().geometry_of((2, 4, side, side)).window == (1, 8, 8)
    assert window_for(res) == (1, res // 128, res // 128)  # the paper's table, which this preset does not follow


def test_mean_proxies_in_training_and_in_inference():
    """No random proxy in train(): the same output whatever the generator, equal to eval()."""
    model = small()
    inputs = model_inputs(2, (1, 32, 32), text_dim=64)
    with torch.no_grad():
        evaluated = model.eval()(*inputs)
        model.train()
        trained = [model(*inputs, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    assert torch.equal(trained[0], trained[1]) and torch.equal(trained[0], evaluated)
    strided = small(proxy_mode="strided").eval()
    with torch.no_grad():
        assert not torch.allclose(strided(*inputs), evaluated)  # the proxy mode really is in play


def test_sinusoid_frequencies_are_torchs_float32_exp():
    """As the published code computes them (torch.exp on float32, in this order); numpy's exp differs in the
    last bit for about half of them."""
    exponent = -math.log(10000.0) * torch.arange(0, 128, dtype=torch.float32)
    published = torch.exp(exponent / 128).numpy()
    assert np.array_equal(sinusoid_frequencies(128, 10000.0), published)


def published_state_dict(depth: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=gen) * 0.02 for k, s in published_layout(depth).items()}


@pytest.mark.parametrize("prefix", ["", "module.", "model.module."])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_published_state_dict_loads_strictly(tmp_path, prefix, suffix):
    """Published key names, as distributed: .safetensors or a torch state dict, with or without a training
    wrapper's prefix around the keys."""
    state = published_state_dict(2)
    path = tmp_path / f"published{suffix}"
    wrapped = {prefix + k: v for k, v in state.items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(wrapped, str(path))
    else:
        torch.save(wrapped, path)
    model = PTDiT(preset("qihoo-t2x").replace(depth=2))
    load_checkpoint(model, path)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_anything_else_is_refused_naming_the_first_keys_and_counts(tmp_path):
    state = published_state_dict(2)
    state["transformer_blocks.0.extra.weight"] = torch.zeros(1)
    del state["proj_out.bias"], state["transformer_blocks.1.attn3.to_q.weight"]
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "w.pt")
    with pytest.raises(InputError, match=r"2 missing: proj_out.bias, transformer_blocks.1.attn3.to_q.weight; "
                                         r"1 unexpected: transformer_blocks.0.extra.weight"):
        load_checkpoint(PTDiT(preset("qihoo-t2x").replace(depth=2)), tmp_path / "w.pt")
    torch.save({"a." + k if i % 2 else "b." + k: v for i, (k, v) in enumerate(state.items())}, tmp_path / "mixed.pt")
    with pytest.raises(InputError, match=r"missing: .*unexpected: "):
        load_checkpoint(PTDiT(preset("qihoo-t2x").replace(depth=2)), tmp_path / "mixed.pt")


@pytest.mark.parametrize("size,latent_hw", [("256", (32, 32)), ("384x256", (32, 48)), ("256x384", (48, 32))])
def test_the_export_equals_the_pytorch_model(tmp_path, size, latent_hw):
    """The preset's settings through ptdit-export (fp32): ONNX Runtime equals PyTorch, and the manifest records
    the windows actually used (8 x 8 at 256, where the paper's table says 2 x 2); at sizes that are not square with
    the published (W, H) position embedding (tests/ptdit/test_published_sizes.py: PyTorch's is the published one)."""
    model = small()
    assert model.cfg.pos_embed_axes == "wh"
    (tmp_path / "cfg.json").write_text(model.cfg.to_json())
    from export.cli import main

    asked = ["--res", size] if "x" not in size else ["--size", size]
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "cfg.json"), *asked, "--precision", "fp32",
                                       "--text-len", "12", "--seed", "3", "--out", str(tmp_path), "--checks", "full"])
    assert result.exit_code == 0, result.output
    onnx_path = tmp_path / f"ptdit-qihoo-t2x-{size}-b2-fp32.onnx"
    manifest = json.loads(onnx_path.with_suffix(".json").read_text())
    assert manifest["geometry"]["window"] == [1, 8, 8] and manifest["geometry"]["proxy_window"] == [1, 8, 8]
    assert manifest["geometry"]["proxy_mode"] == "mean"
    assert manifest["checks"]["onnxruntime_parity"]["vs_torch_fp32"]["rel_l2"] < 1e-5
    latent, timestep, text, mask = model_inputs(2, (1, *latent_hw), text_len=12, text_dim=64)
    feeds = {"latent": latent.numpy(), "timestep": timestep.numpy(), "text_embeds": text.numpy(),
             "text_mask": mask.numpy()}
    out = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with torch.no_grad():
        ref = model.eval()(latent, timestep, text, mask).numpy()
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-5


def test_every_command_that_takes_a_preset_accepts_it(tmp_path):
    for command in ("ptdit-export",):
        help_text = subprocess.run([command, "--help"], capture_output=True, text=True, check=True).stdout
        assert "qihoo-t2x" in help_text
    result = subprocess.run([sys.executable, "-m", "export", "--preset", "qihoo-t2x", "--res", "1024", "--checkpoint",
                             str(tmp_path / "absent.safetensors"), "--out", str(tmp_path / "o")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "absent.safetensors does not exist" in result.stderr  # past preset parsing
    from bench.complexity import complexity_rows

    rows = complexity_rows("qihoo-t2x", onnx=False, report=lambda line: None)
    assert rows[0]["proxy"]["attention"] > 0

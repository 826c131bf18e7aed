import pytest
import torch

from conftest import model_inputs
from ptdit import InputError, PTDiT, PTDiTConfig, preset
from ptdit.resolution import SUPPORTED_RESOLUTIONS, latent_hw, window_for


@pytest.mark.parametrize("res", SUPPORTED_RESOLUTIONS)
def test_every_table_resolution_runs(tiny_model, res):
    side = latent_hw(res)
    inputs = model_inputs(2, (1, side, side))
    with torch.no_grad():
        out = tiny_model(*inputs)
    assert out.shape == (2, 8, side, side) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("height,width,frames", [(192, 320, 1), (320, 192, 1), (128, 512, 1), (192, 320, 4)])
def test_a_size_of_another_aspect_ratio_runs_in_its_classs_windows(tiny_model, height, width, frames):
    inputs = model_inputs(2, (frames, height // 8, width // 8))
    with torch.no_grad():
        out = tiny_model(*inputs)
        alone = tiny_model(*(x[1:] for x in inputs))
    assert out.shape == (2, 8, *((frames,) if frames > 1 else ()), height // 8, width // 8)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[1:], alone, atol=1e-5)  # each sample on its own, as at the square sizes
    geo = tiny_model.geometry_of(tuple(inputs[0].shape))
    assert geo.window == window_for(height, width, frames=frames if frames > 1 else None)
    assert geo.grid == (frames, height // 16, width // 16)


def test_video_grid(tiny_model):
    inputs = model_inputs(1, (8, 64, 64))  # 8 latent frames at 512 px
    with torch.no_grad():
        out = tiny_model(*inputs)
    assert out.shape == (1, 8, 8, 64, 64)
    assert torch.isfinite(out).all()
    geo = tiny_model.geometry_of(tuple(inputs[0].shape))
    assert geo.window == (4, 4, 4) and geo.shift == (2, 2, 2)


def test_eval_is_bit_identical_and_draws_no_random_numbers(tiny_model, monkeypatch):
    inputs = model_inputs(2, (1, 32, 32))

    def no_randomness(*args, **kwargs):
        raise AssertionError("eval() drew a random number")

    monkeypatch.setattr(torch, "randint", no_randomness)
    state = torch.get_rng_state()
    with torch.no_grad():
        a, b = tiny_model(*inputs), tiny_model(*inputs)
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())


def test_train_random_proxies_vary_and_are_reproducible():
    model = PTDiT(preset("tiny")).train()
    inputs = model_inputs(1, (1, 32, 32))
    with torch.no_grad():
        a = model(*inputs, generator=torch.Generator().manual_seed(1))
        b = model(*inputs, generator=torch.Generator().manual_seed(1))
        c = model(*inputs, generator=torch.Generator().manual_seed(2))
        evaluated = model.eval()(*inputs)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, evaluated)


@pytest.mark.parametrize("mode", ["strided", "mean"])
def test_proxy_modes_change_the_output(mode):
    inputs = model_inputs(1, (1, 32, 32))
    with torch.no_grad():
        strided_out = PTDiT(preset("tiny")).eval()(*inputs)
        out = PTDiT(preset("tiny").replace(proxy_mode=mode)).eval()(*inputs)
    assert torch.equal(out, strided_out) == (mode == "strided")


def test_batch_elements_are_independent(tiny_model):
    latent, timestep, text, mask = model_inputs(2, (1, 32, 32))
    with torch.no_grad():
        both = tiny_model(latent, timestep, text, mask)
        first = tiny_model(latent[:1], timestep[:1], text[:1], mask[:1])
        second = tiny_model(latent[1:], timestep[1:], text[1:], mask[1:])
        perturbed = tiny_model(latent, torch.stack([timestep[0], timestep[1] + 100]), text, mask)
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(perturbed[0], both[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(perturbed[1], both[1])


def test_text_mask_hides_padded_tokens(tiny_model):
    latent, timestep, text, mask = model_inputs(1, (1, 32, 32))
    garbage = text.clone()
    garbage[mask == 0] = 1000.0
    with torch.no_grad():
        a, b = tiny_model(latent, timestep, text, mask), tiny_model(latent, timestep, garbage, mask)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_every_path_contributes(tiny_model):
    """Removing any sub-layer changes the output (no silently dead path in the seeded weights)."""
    inputs = model_inputs(1, (1, 32, 32))
    with torch.no_grad():
        ref = tiny_model(*inputs)
        for name in ("proxy_attn1", "pvisual_attn2", "attn1", "attn3", "attn2", "ff"):
            module = getattr(tiny_model.transformer_blocks[0], name)
            saved = module.to_out[0].weight.clone() if name != "ff" else module.net[2].weight.clone()
            target = module.to_out[0].weight if name != "ff" else module.net[2].weight
            target.zero_()
            changed = not torch.allclose(tiny_model(*inputs), ref)
            target.copy_(saved)
            assert changed, name


def test_full_attention_baseline_runs():
    model = PTDiT(preset("tiny").replace(attention="full")).eval()
    names = {n.split(".")[2] for n, _ in model.named_parameters() if n.startswith("transformer_blocks.0.")}
    assert names == {"attn1", "attn2", "ff", "scale_shift_table"}  # a PixArt-alpha block
    with torch.no_grad():
        out = model(*model_inputs(1, (1, 32, 32)))
    assert out.shape == (1, 8, 32, 32)


@pytest.mark.parametrize("dtype,max_rel", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_low_precision_policy(dtype, max_rel):
    inputs = model_inputs(2, (1, 32, 32))
    with torch.no_grad():
        ref = PTDiT(preset("tiny")).eval()(*inputs)
        out = PTDiT(preset("tiny")).eval().to(dtype)(*inputs)
    assert out.dtype == torch.float32
    rel = ((out - ref).norm() / ref.norm()).item()
    assert 0 < rel < max_rel


def test_bad_inputs_name_the_problem(tiny_model):
    latent, timestep, text, mask = model_inputs(2, (1, 32, 32))
    cases = [
        ((latent[:, :3], timestep, text, mask), "latent must be"),
        ((latent, timestep[:1], text, mask), "timestep must be"),
        ((latent, timestep, text[..., :100], mask), "text_embeds must be"),
        ((latent, timestep, text, mask[:, :3]), "text_mask must be"),
        ((latent.long(), timestep, text, mask), "floating-point"),
        ((latent[..., :26, :26], timestep, text, mask), "size 208x208 is not on the 256 class's grid"),
        ((torch.zeros(2, 4, 6, 32, 32), timestep, text, mask), "multiple of 4"),
    ]
    for args, message in cases:
        with pytest.raises(InputError, match=message):
            tiny_model(*args)


def test_window_override():
    model = PTDiT(preset("tiny").replace(window=(1, 4, 4), proxy_window=(1, 2, 2))).eval()
    with torch.no_grad():
        out = model(*model_inputs(1, (1, 64, 64)))
    assert out.shape == (1, 8, 64, 64)
    with pytest.raises(InputError, match="must divide"):
        PTDiT(preset("tiny").replace(window=(1, 4, 4), proxy_window=(1, 3, 3)))


def test_size_conditioning_adds_the_published_embedders():
    cfg = PTDiTConfig(name="sc", depth=1, num_heads=2, head_dim=24, size_conditioning=True)
    model = PTDiT(cfg).eval()
    names = {n for n, _ in model.named_parameters()}
    assert {"adaln_single.emb.resolution_embedder.linear_1.weight",
            "adaln_single.emb.aspect_ratio_embedder.linear_2.bias"} <= names
    with torch.no_grad():
        a = model(*model_inputs(1, (1, 32, 32)))
    assert a.shape == (1, 8, 32, 32)
    with pytest.raises(InputError, match="divisible by 3"):
        preset("tiny").replace(size_conditioning=True)

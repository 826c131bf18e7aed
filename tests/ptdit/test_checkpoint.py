import pytest
import torch

from conftest import model_inputs
from ptdit import InputError, PTDiT, load_checkpoint, preset, read_state_dict, save_checkpoint

D = 1152


def published_layout(depth: int) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the published PTDiTDiffuser with the Qihoo-T2X image config
    (examples/qihoo_t2x/inference_model_image.json), written out from the published module definitions."""
    shapes: dict[str, tuple[int, ...]] = {
        "pos_embed.proj.weight": (D, 4, 2, 2), "pos_embed.proj.bias": (D,),
        "pos_embed.pos_embed": (1, 1, 256, D),  # persistent buffer, sample_size 32 -> 16 x 16 patches
        "adaln_single.emb.timestep_embedder.linear_1.weight": (D, 256),
        "adaln_single.emb.timestep_embedder.linear_1.bias": (D,),
        "adaln_single.emb.timestep_embedder.linear_2.weight": (D, D),
        "adaln_single.emb.timestep_embedder.linear_2.bias": (D,),
        "adaln_single.linear.weight": (6 * D, D), "adaln_single.linear.bias": (6 * D,),
        "caption_projection.linear_1.weight": (D, 4096), "caption_projection.linear_1.bias": (D,),
        "caption_projection.linear_2.weight": (D, D), "caption_projection.linear_2.bias": (D,),
        "scale_shift_table": (2, D),
        "proj_out.weight": (32, D), "proj_out.bias": (32,),
    }
    for n in range(depth):
        block = f"transformer_blocks.{n}."
        for attn in ("proxy_attn1", "attn1", "pvisual_attn2", "attn2", "attn3"):
            for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                shapes[f"{block}{attn}.{proj}.weight"] = (D, D)
                shapes[f"{block}{attn}.{proj}.bias"] = (D,)
        for lin, shape in (("ff.net.0.proj", (4 * D, D)), ("ff.net.2", (D, 4 * D)),
                           ("linear_1_visual", (D, D)), ("linear_2", (D, D))):
            shapes[f"{block}{lin}.weight"] = shape
            shapes[f"{block}{lin}.bias"] = (shape[0],)
        shapes[f"{block}scale_shift_table"] = (6, D)
        shapes[f"{block}proxy_scale_shift_table"] = (3, D)
    return shapes


def test_parameter_names_follow_the_published_checkpoint():
    model = PTDiT(preset("xl").replace(depth=2))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == published_layout(2)


def test_xl_parameter_count():
    block = sum(torch.Size(s).numel() for k, s in published_layout(1).items() if k.startswith("transformer_blocks"))
    top = sum(torch.Size(s).numel() for k, s in published_layout(1).items()
              if not k.startswith("transformer_blocks") and k != "pos_embed.pos_embed")
    assert top + 28 * block == 1_131_629_216


@pytest.mark.parametrize("suffix,nest", [(".safetensors", None), (".pt", None), (".pth", "model"), (".pt", "ema.net")])
def test_round_trip(tmp_path, suffix, nest):
    source = PTDiT(preset("tiny"), seed=7).eval()
    path = tmp_path / f"w{suffix}"
    if nest is None:
        save_checkpoint(source, path)
    else:
        obj = {k: v for k, v in source.state_dict().items()}
        for part in reversed(nest.split(".")):
            obj = {part: obj, "step": 10}  # type: ignore[dict-item]
        torch.save(obj, path)
    target = PTDiT(preset("tiny"), seed=0).eval()
    key = nest if nest and "." in nest else None  # single wrappers are found automatically
    sha = load_checkpoint(target, path, key=key)
    assert len(sha) == 64 and "checkpoint" in target.weights_source
    inputs = model_inputs(1, (1, 32, 32))
    with torch.no_grad():
        assert torch.equal(source(*inputs), target(*inputs))


def test_missing_unexpected_and_misshaped_keys_are_reported(tmp_path):
    state = PTDiT(preset("tiny")).state_dict()
    del state["proj_out.bias"]
    state["transformer_blocks.0.extra.weight"] = torch.zeros(1)
    state["transformer_blocks.1.attn1.to_q.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(InputError) as e:
        load_checkpoint(PTDiT(preset("tiny")), tmp_path / "bad.pt")
    msg = str(e.value)
    assert "1 missing: proj_out.bias" in msg
    assert "1 unexpected: transformer_blocks.0.extra.weight" in msg
    assert "transformer_blocks.1.attn1.to_q.weight [3, 3] (model: [64, 64])" in msg


def test_wrong_preset_is_reported(tmp_path):
    save_checkpoint(PTDiT(preset("tiny")), tmp_path / "tiny.safetensors")
    with pytest.raises(InputError, match="does not match the model config"):
        load_checkpoint(PTDiT(preset("tiny").replace(depth=3)), tmp_path / "tiny.safetensors")


def test_derived_position_buffer_may_be_absent(tmp_path):
    source = PTDiT(preset("tiny"), seed=3)
    state = {k: v for k, v in source.state_dict().items() if k != "pos_embed.pos_embed"}
    torch.save(state, tmp_path / "w.pt")
    target = PTDiT(preset("tiny"))
    load_checkpoint(target, tmp_path / "w.pt")
    assert torch.equal(target.proj_out.weight, source.proj_out.weight)


def test_unreadable_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    torch.save({"a": 1}, tmp_path / "nostate.pt")
    for name, message in (("junk.pt", r"is not a readable torch \(weights only\) file"),
                          ("junk.safetensors", "is not a readable safetensors file"),
                          ("nostate.pt", "does not hold a state dict"), ("absent.pt", "does not exist")):
        with pytest.raises(InputError, match=message):
            read_state_dict(tmp_path / name)
    with pytest.raises(InputError, match="no entry 'nope'"):
        torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "nested.pt")
        read_state_dict(tmp_path / "nested.pt", key="nope")

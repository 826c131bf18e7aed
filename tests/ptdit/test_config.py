import json

import pytest

from ptdit import PRESETS, InputError, PTDiTConfig, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name, tmp_path):
    cfg = preset(name).replace(window=(1, 8, 8), proxy_offset=(0, 1, 2))
    path = tmp_path / "cfg.json"
    path.write_text(cfg.to_json())
    assert PTDiTConfig.from_json_file(path) == cfg
    assert PTDiTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_xl_matches_the_published_image_model():
    xl = preset("xl")
    assert (xl.depth, xl.num_heads, xl.head_dim, xl.hidden_size) == (28, 16, 72, 1152)
    assert (xl.patch_size, xl.in_channels, xl.out_channels, xl.text_dim) == (2, 4, 8, 4096)
    assert xl.shift_window and xl.attention == "proxy" and not xl.norm_affine


def test_tiny_is_small():
    tiny = preset("tiny")
    assert (tiny.depth, tiny.hidden_size) == (2, 64)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"depth": 0}, "depth must be a positive integer"),
        ({"head_dim": 10}, "multiple of 16"),
        ({"proxy_mode": "random"}, "eval never draws random numbers"),
        ({"train_proxy_mode": "first"}, "train_proxy_mode"),
        ({"window": (1, 8)}, "three integers"),
        ({"attention": "linear"}, "attention must be"),
        ({"mask_value": 0.0}, "negative"),
    ],
)
def test_invalid_configs(changes, message):
    with pytest.raises(InputError, match=message):
        preset("tiny").replace(**changes)


def test_unknown_keys_and_presets(tmp_path):
    with pytest.raises(InputError, match="unknown PT-DiT config keys"):
        PTDiTConfig.from_dict({"depth": 2, "layers": 3})
    with pytest.raises(InputError, match="available presets are tiny, xl"):
        preset("huge")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        PTDiTConfig.from_json_file(tmp_path / "bad.json")

"""The text side of the pipeline: the T5 encoder reference (against transformers' own T5 where installed), its
fp32 islands against a planted fp16 overflow, the stand-in tokenizer's T5 conventions, caption cleaning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ptdit.contract.errors import InputError
from ptdit.t5 import T5_PRESETS, T5Config, T5Encoder, relative_position_buckets

TINY = T5_PRESETS["tiny"]


def ids_and_mask(length: int = 200, kept: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, TINY.vocab_size, (2, length), generator=gen)
    mask = torch.zeros(2, length, dtype=torch.int64)
    mask[0, :kept], mask[1, :1] = 1, 1  # a prompt, and the empty negative prompt ("</s>" alone)
    return ids, mask


def test_the_t5_encoder_is_transformers_t5_with_the_same_weights():
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.T5Config(vocab_size=TINY.vocab_size, d_model=TINY.d_model, d_kv=TINY.d_kv,
                                      num_heads=TINY.num_heads, d_ff=TINY.d_ff, num_layers=TINY.num_layers,
                                      feed_forward_proj="gated-gelu", dropout_rate=0.0)
    reference = transformers.T5EncoderModel(hf_config).eval()
    ours = T5Encoder(TINY).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)  # the same parameter names
    ids, mask = ids_and_mask()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    assert got.dtype == torch.float32 and got.shape == (2, 200, 4096)
    assert float((got - expected).norm() / expected.norm()) < 1e-6


def test_relative_position_buckets_follow_t5():
    buckets = relative_position_buckets(200, 32, 128)
    assert buckets[0, 0] == 0 and buckets[0, 1] == 17 and buckets[1, 0] == 1  # keys after the query: upper half
    assert buckets[0, 7] == 23 and buckets[0, 8] >= 24 and buckets[0, 199] == 31 and buckets[199, 0] == 15
    assert bool((buckets[0, 1:] >= buckets[0, :-1]).all())  # monotone in the distance


def test_fp32_islands_hold_a_planted_fp16_overflow():
    """An FFN output of 2.4e5 (fp16's largest value is 65504) planted in layer 0: all-fp16 T5 turns it into inf
    and NaN; with the residual stream, the norms and the FFN output projection in fp32 the fp16 model stays
    within 1e-2 of fp32."""
    reference = T5Encoder(TINY).eval()
    ids, mask = ids_and_mask()
    ff = reference.encoder.block[0].layer[1]
    with torch.no_grad():
        h = ff.layer_norm(reference.shared(ids).float(), torch.float32)
        gated = torch.nn.functional.gelu(ff.DenseReluDense.wi_0(h), approximate="tanh") * ff.DenseReluDense.wi_1(h)
        mean = gated[0, :20].mean(0)
        ff.DenseReluDense.wo.weight[7] = 2.4e5 * mean / mean.pow(2).sum()  # channel 7 ~ 2.4e5 on average
        peak: list[float] = []
        hook = ff.DenseReluDense.register_forward_hook(lambda m, i, out: peak.append(float(out.abs().max())))
        expected = reference(ids, mask)
        hook.remove()
    assert peak[0] > 1.2e5  # well past fp16's range
    errors = {}
    for islands in (True, False):
        model = T5Encoder(TINY, fp32_islands=islands).eval()
        model.load_state_dict(reference.state_dict())
        with torch.no_grad():
            got = model.half()(ids, mask)
        kept = slice(0, 20)
        errors[islands] = float((got[0, kept] - expected[0, kept]).norm() / expected[0, kept].norm())
    assert errors[True] < 1e-2
    assert not np.isfinite(errors[False]) or errors[False] > 0.3


def test_t5_config_from_a_hugging_face_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 4096, "num_layers": 24,
                                                      "feed_forward_proj": "gated-gelu", "vocab_size": 32128}))
    cfg = T5Config.from_hf_dir(tmp_path)
    assert cfg.d_model == 4096 and cfg.num_layers == 24 and cfg.num_heads == 64
    assert T5_PRESETS["t5-v1_1-xxl"].parameters == pytest.approx(4.76e9, rel=0.01)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "feed_forward_proj": "relu"}))
    with pytest.raises(InputError, match="not a T5 v1.1 config"):
        T5Config.from_hf_dir(tmp_path)
    with pytest.raises(InputError, match="cannot read the text encoder's"):
        T5Config.from_hf_dir(tmp_path / "missing")


def test_the_standin_tokenizer_has_t5s_conventions(tmp_path):
    pytest.importorskip("tokenizers")
    from export.pipeline.tokenizer import load_tokenizer, standin_tokenizer
    from runtime.pipeline.prompt import PromptTokenizer

    tokenizer = standin_tokenizer(TINY.vocab_size)
    assert tokenizer.get_vocab_size() <= TINY.vocab_size
    assert [tokenizer.token_to_id(t) for t in ("<pad>", "</s>", "<unk>")] == [0, 1, 2]
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    assert load_tokenizer(tmp_path, TINY.vocab_size) is not None
    prompt = PromptTokenizer(tmp_path / "tokenizer.json", 200)
    ids, mask = prompt("A red fox")
    words = [tokenizer.token_to_id("\u2581" + w) for w in ("red", "fox")]
    assert ids.shape == mask.shape == (1, 200) and ids.dtype == mask.dtype == np.int64
    assert ids[0, 1:4].tolist() == [*words, 1] and mask[0].tolist() == [1] * 4 + [0] * 196
    assert (ids[0, 4:] == 0).all()  # padded with <pad>
    empty_ids, empty_mask = prompt("")
    assert empty_ids[0, :2].tolist() == [1, 0] and int(empty_mask.sum()) == 1  # the negative prompt: "</s>" alone
    long_ids, long_mask = prompt("fox " * 500)
    assert int(long_mask.sum()) == 200 and long_ids[0, -1] == 1  # truncated, "</s>" kept last
    assert prompt("a  RED   fox")[0].tolist() == prompt("a red fox")[0].tolist()  # cleaned: case and spaces


def test_tokenizer_files_are_checked(tmp_path):
    pytest.importorskip("tokenizers")
    from export.pipeline.tokenizer import load_tokenizer, standin_tokenizer

    with pytest.raises(InputError, match="has no tokenizer.json"):
        load_tokenizer(tmp_path, 512)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(InputError, match="is not a readable tokenizers file"):
        load_tokenizer(tmp_path, 512)
    standin_tokenizer(512).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(InputError, match="more than the encoder's vocabulary of 100"):
        load_tokenizer(tmp_path, 100)


def test_caption_cleaning():
    from runtime.pipeline.prompt import clean_prompt

    messy = "  A Red&amp;Blue  <b>Fox</b> \u2014 see https://example.com/x @someone "
    assert clean_prompt(messy) == "a red&blue fox - see"
    assert clean_prompt("\u201cquoted\u201d \u2018single\u2019") == "\"quoted\" 'single'"


def test_the_first_layer_cut_and_the_layer_by_layer_fp32_forward():
    """The cut shares the encoder's weights and equals a one-layer encoder holding them; upcast_layers gives the
    fp32 result of fp16 weights (the fp32 model with the same, rounded weights) without an fp32 copy."""
    from ptdit.t5 import first_layer

    encoder = T5Encoder(TINY).eval()
    cut = first_layer(encoder)
    assert cut.cfg.num_layers == 1 and cut.shared.weight.data_ptr() == encoder.shared.weight.data_ptr()
    one = T5Encoder(T5Config(**{**TINY.to_dict(), "num_layers": 1})).eval()
    one.load_state_dict(cut.state_dict())
    ids, mask = ids_and_mask()
    with torch.no_grad():
        torch.testing.assert_close(cut(ids, mask), one(ids, mask), rtol=0, atol=0)
        half = T5Encoder(TINY).eval().half()
        rounded = T5Encoder(TINY).eval()
        rounded.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
        torch.testing.assert_close(half(ids, mask, upcast_layers=True), rounded(ids, mask), rtol=1e-6, atol=1e-6)
    assert half.dtype == torch.float16  # nothing was converted in place


@pytest.mark.parametrize("precision,level,limit", [("fp32", "full", 1e-5), ("fp16", "full", 2e-2),
                                                   ("fp16", "fast", 2e-2), ("bf16", "fast", 1e-1)])
def test_the_text_encoder_onnx_matches_pytorch(tmp_path, precision, level, limit):
    """The exported T5 (whole, or cut to its first layer as --checks fast does) through ONNX Runtime against
    PyTorch fp32 with the same weights; the parse and structural checks ran too."""
    pytest.importorskip("tokenizers")
    from export.options import ExportOptions, PipelineOptions
    from export.pipeline.components import export_text_encoder
    from export.progress import Stages
    from ptdit import preset
    from ptdit.contract.onnx_manifest import Weights
    from ptdit.contract.sizes import Size

    opts = ExportOptions(preset("tiny"), [Size(256, 256)], checks=level, out_dir=tmp_path)
    entry, exported = export_text_encoder(T5Encoder(TINY).eval(), Weights("seeded", seed=0), opts,
                                          PipelineOptions(text_encoder_precision=precision), tmp_path,
                                          Stages(lambda line: None))
    manifest = json.loads((tmp_path / entry.manifest).read_text())
    parity = manifest["checks"]["onnxruntime_parity"]
    assert parity["scope"] == ("whole component" if level == "full" else "cut to its first layer")
    dtype = getattr(torch, {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision])
    assert parity["passed"] and 0 < entry.rel_l2 < limit and exported.dtype == dtype
    assert manifest["checks"]["tensorrt_ops"]["max_rank"] <= 8 and manifest["inputs"][0]["shape"] == [1, 200]
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry.manifest, entry.onnx]  # the cut's files are gone

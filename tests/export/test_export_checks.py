"""Each export check, shown able to fail on a graph that violates it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from export.checks import structural as checks
from export.checks.operator_table import support_table, unsupported_ops
from export.checks.runs import error_metrics, parity_inputs, run_onnxruntime
from ptdit.contract.bf16 import emulate_bf16
from ptdit.contract.onnx_manifest import TensorSpec


def model_of(nodes, inputs, outputs, initializers=(), opset=18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def vi(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def save(model: onnx.ModelProto, tmp_path: Path, name: str = "m.onnx") -> Path:
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def good_model() -> onnx.ModelProto:
    return model_of([helper.make_node("Add", ["x", "x"], ["y"])], [vi("x", TensorProto.FLOAT, [2, 3])],
                    [vi("y", TensorProto.FLOAT, [2, 3])])


def test_good_model_passes_everything(tmp_path):
    path = save(good_model(), tmp_path)
    checks.onnx_checker(path)
    inferred = checks.infer_shapes(path)
    checks.static_shapes(inferred)
    checks.no_random_ops(inferred)
    assert checks.tensorrt_ops(inferred)["ops"] == {"Add": 1}


def test_checker_catches_an_invalid_graph(tmp_path):
    bad = model_of([helper.make_node("Add", ["x", "undefined"], ["y"])], [vi("x", TensorProto.FLOAT, [2])],
                   [vi("y", TensorProto.FLOAT, [2])])
    with pytest.raises(checks.CheckFailed, match="onnx_checker"):
        checks.onnx_checker(save(bad, tmp_path))


def test_static_shapes_catches_a_symbolic_dimension(tmp_path):
    dynamic = model_of([helper.make_node("Add", ["x", "x"], ["y"])], [vi("x", TensorProto.FLOAT, ["batch", 3])],
                       [vi("y", TensorProto.FLOAT, ["batch", 3])])
    with pytest.raises(checks.CheckFailed, match=r"not static: 'x' has shape \['batch', 3\]"):
        checks.static_shapes(checks.infer_shapes(save(dynamic, tmp_path)))


def test_random_ops_are_caught(tmp_path):
    rnd = model_of([helper.make_node("RandomNormalLike", ["x"], ["r"]), helper.make_node("Add", ["x", "r"], ["y"])],
                   [vi("x", TensorProto.FLOAT, [2])], [vi("y", TensorProto.FLOAT, [2])])
    with pytest.raises(checks.CheckFailed, match="RandomNormalLike"):
        checks.no_random_ops(checks.infer_shapes(save(rnd, tmp_path)))


def test_unsupported_operator_type_and_non_initializer_axes(tmp_path):
    unsupported_op = model_of([helper.make_node("Det", ["x"], ["y"])], [vi("x", TensorProto.FLOAT, [3, 3])],
                              [vi("y", TensorProto.FLOAT, [])])
    double = model_of([helper.make_node("Add", ["x", "x"], ["y"])], [vi("x", TensorProto.DOUBLE, [2])],
                      [vi("y", TensorProto.DOUBLE, [2])])
    axes_input = model_of(
        [helper.make_node("Slice", ["x", "s", "e", "axes"], ["y"])],
        [vi("x", TensorProto.FLOAT, [4, 4]), vi("axes", TensorProto.INT64, [1])],
        [vi("y", TensorProto.FLOAT, [4, 2])],
        [numpy_helper.from_array(np.array([0], np.int64), "s"), numpy_helper.from_array(np.array([2], np.int64), "e")],
    )
    for model, message in ((unsupported_op, "Det node .*operator not supported"),
                           (double, "is DOUBLE, TensorRT supports"),
                           (axes_input, "input 'axes' must be an initializer")):
        with pytest.raises(checks.CheckFailed, match=message):
            checks.tensorrt_ops(checks.infer_shapes(save(model, tmp_path)))


def rank9_model() -> onnx.ModelProto:
    """A Reshape to 9 dimensions and back: valid ONNX, but beyond TensorRT's 8."""
    shape9 = numpy_helper.from_array(np.array([1, 2, 1, 2, 1, 2, 1, 2, 3], np.int64), "shape9")
    shape2 = numpy_helper.from_array(np.array([16, 3], np.int64), "shape2")
    return model_of([helper.make_node("Reshape", ["x", "shape9"], ["x9"]),
                     helper.make_node("Reshape", ["x9", "shape2"], ["y"])],
                    [vi("x", TensorProto.FLOAT, [16, 3])], [vi("y", TensorProto.FLOAT, [16, 3])], [shape9, shape2])


def test_values_above_tensorrts_rank_are_caught(tmp_path):
    with pytest.raises(checks.CheckFailed, match=r"1 values have more than 8 dimensions, which TensorRT cannot "
                                                 r"represent: 'x9' has rank 9"):
        checks.tensorrt_ops(checks.infer_shapes(save(rank9_model(), tmp_path)))
    assert checks.tensorrt_ops(checks.infer_shapes(save(good_model(), tmp_path)))["max_rank"] == 2


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt_rtx") is None, reason="TensorRT-RTX not installed")
def test_the_real_parse_reports_the_parsers_own_errors(tmp_path):
    """TensorRT-RTX's parser on this CPU: the rank-9 graph is rejected with the parser's message, verbatim."""
    from export.checks.tensorrt_parse import ParseFailed, parse

    with pytest.raises(ParseFailed, match=r"TensorRT-RTX 1\.\d+\.\S+'s ONNX parser rejected m.onnx: .*Number of "
                                          r"dimensions \(9\)"):
        parse(save(rank9_model(), tmp_path))
    result = parse(save(good_model(), tmp_path))
    assert result["ran"] and result["layers"] == 1
    assert result["io"] == [{"name": "x", "shape": [2, 3], "dtype": "float32"},
                            {"name": "y", "shape": [2, 3], "dtype": "float32"}]


def test_without_a_builder_the_parse_is_reported_as_not_run(tmp_path, monkeypatch):
    import export.checks.tensorrt_parse as tensorrt_parse

    monkeypatch.setattr(tensorrt_parse, "import_flavour", lambda name: None)  # as if neither were installed
    assert tensorrt_parse.parse(save(good_model(), tmp_path)) == {
        "ran": False, "reason": "no TensorRT builder is installed (pip install tensorrt-rtx-cu13 (parses and builds "
                                "on a CPU))"}


def test_support_table_is_read_with_its_typo_fixed():
    table = support_table()
    assert table["MatMul"].supported and {"FP32", "FP16", "BF16"} <= table["MatMul"].types
    assert not table["Col2Im"].supported
    assert "INT64" in table["ConstantOfShape"].types
    assert table["Squeeze"].constant_inputs == ("axes",)
    assert unsupported_ops(good_model()) == []


def test_error_metrics():
    expected = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    metrics = error_metrics(expected + np.array([0, 0, 0, 0.5], np.float32), expected)
    assert metrics["max_abs"] == 0.5 and metrics["mean_abs"] == 0.125
    assert metrics["rel_l2"] == pytest.approx(0.5 / np.sqrt(30), rel=1e-3)
    assert error_metrics(expected, expected) == {"max_abs": 0.0, "mean_abs": 0.0, "rel_l2": 0.0, "cosine": 1.0}


def test_parity_inputs_are_seeded_and_padded():
    specs = [TensorSpec("latent", (2, 4, 8, 8), "float32"), TensorSpec("timestep", (2,), "float32"),
             TensorSpec("text_mask", (2, 10), "int64")]
    a, b = parity_inputs(specs, 0), parity_inputs(specs, 0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["latent"], parity_inputs(specs, 1)["latent"])
    lengths = a["text_mask"].sum(1)
    assert lengths[0] > lengths[1] > 0 and lengths[0] < 10


def test_bf16_emulation_matches_torch_bf16(tmp_path):
    """MatMul in bf16 with bf16 inputs: the emulated fp32 graph rounds like torch's bf16 matmul."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 16)).astype(np.float32)
    w_bf16 = torch.from_numpy(w).bfloat16()
    init = numpy_helper.from_array(w_bf16.view(torch.int16).numpy().view(np.uint16), "w")
    init.data_type = TensorProto.BFLOAT16
    model = model_of(
        [helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16),
         helper.make_node("MatMul", ["xb", "w"], ["yb"]),
         helper.make_node("Cast", ["yb"], ["y"], to=TensorProto.FLOAT)],
        [vi("x", TensorProto.FLOAT, [4, 16])], [vi("y", TensorProto.FLOAT, [4, 16])], [init])
    path = save(model, tmp_path)
    inferred = checks.infer_shapes(path)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    got = run_onnxruntime(path, {"x": x}, inferred)["y"]
    expected = (torch.from_numpy(x).bfloat16() @ w_bf16).float().numpy()
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, x @ w)  # the rounding is real
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # the emulated copy is removed
    emulated = emulate_bf16(onnx.load(str(path)))
    assert all(i.data_type == TensorProto.FLOAT for i in emulated.graph.initializer)

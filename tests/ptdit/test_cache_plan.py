"""Step caching's rules (ptdit.contract.cache): what --cache accepts, which steps a method computes, the calibration
file, and the two small graphs a device step loop runs (they parse and build with TensorRT-RTX)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ptdit.contract.cache import (
    MAX_SKIPS,
    SCHEMA,
    CacheSpec,
    Calibration,
    ChangeCurve,
    calibration_file,
    compute_plan,
    parse_cache,
    read_calibrations,
)
from ptdit.contract.errors import InputError
from ptdit.contract.schedule import timesteps

TS = timesteps(30, 0.5)
FLAT = ChangeCurve((900.0, 500.0, 100.0), (3.0, 3.0, 3.0))  # 3 per 1000 of timestep everywhere


@pytest.mark.parametrize("text, spec", [
    (None, None), ("off", None), ("", None), ("every:2", CacheSpec("every", 2.0)),
    ("every+taylor:3", CacheSpec("every", 3.0, "taylor")), ("calibrated:0.25", CacheSpec("calibrated", 0.25)),
    ("calibrated", CacheSpec("calibrated", None)), ("default", CacheSpec("calibrated", None)),
    ("calibrated+taylor:0", CacheSpec("calibrated", 0.0, "taylor")),
])
def test_what_cache_accepts(text, spec):
    assert parse_cache(text) == spec


@pytest.mark.parametrize("text, message", [
    ("calibrated:-0.1", "finite number >= 0"), ("calibrated:nan", "finite number >= 0"),
    ("calibrated:inf", "finite number >= 0"), ("calibrated:abc", "finite number >= 0"),
    ("teacache:0.1", "is not a cache method"), ("every+cubic:2", "is not a cache method"),
    ("every:0", "whole number of steps, 1 or more"), ("every:1.5", "whole number of steps, 1 or more"),
    ("every", "needs N"),
])
def test_what_cache_refuses_in_one_line_naming_it(text, message):
    with pytest.raises(InputError, match=message) as caught:
        parse_cache(text)
    assert str(caught.value).startswith(f"cache={text!r}") and "\n" not in str(caught.value)


def test_every_computes_every_nth_step_from_the_first():
    plan = compute_plan(parse_cache("every:3"), TS)
    assert plan == tuple(i % 3 == 0 for i in range(30)) and sum(plan) == 10
    assert sum(compute_plan(parse_cache("every:2"), TS)) == 15


@pytest.mark.parametrize("text", [None, "every:1", "calibrated:0", "calibrated+taylor:0"])
def test_off_every_1_and_threshold_0_compute_every_step(text):
    assert compute_plan(parse_cache(text), TS, FLAT) == (True,) * 30


def test_calibrated_skips_more_as_the_threshold_grows_and_never_more_than_max_skips_in_a_row():
    computed = [sum(compute_plan(parse_cache(f"calibrated:{v}"), TS, FLAT)) for v in (0.01, 0.1, 0.3, 1.0, 100.0)]
    assert computed == sorted(computed, reverse=True) and computed[0] == 30 and computed[-1] < 15
    plan = compute_plan(parse_cache("calibrated:100"), TS, FLAT)
    runs = "".join("c" if c else "s" for c in plan).split("c")
    assert max(len(r) for r in runs) == MAX_SKIPS and plan[0]


def test_calibrated_skips_where_the_curve_says_the_prediction_changes_little():
    steep_late = ChangeCurve((900.0, 500.0, 100.0), (0.5, 0.5, 20.0))  # calm early, fast late (a trained DiT's end)
    plan = compute_plan(parse_cache("calibrated:0.1"), TS, steep_late)
    assert not all(plan[:15]) and all(plan[-5:])


def test_the_default_threshold_is_the_calibrations_and_no_calibration_is_one_line():
    assert compute_plan(parse_cache("default"), TS, FLAT, threshold=0.0) == (True,) * 30
    assert sum(compute_plan(parse_cache("default"), TS, FLAT, threshold=0.5)) < 30
    with pytest.raises(InputError, match="needs this artifact's change curve: run ptdit-cache calibrate"):
        compute_plan(parse_cache("default"), TS)


def test_caching_with_one_step_is_refused():
    with pytest.raises(InputError, match="needs 2 steps or more"):
        compute_plan(parse_cache("every:2"), TS[:1])
    assert compute_plan(None, TS[:1]) == (True,)


def test_the_curve_gives_back_the_changes_it_was_measured_from():
    changes = [0.0, 0.4, 0.2, 0.1]
    ts = [1000.0, 700.0, 400.0, 100.0]
    mids = tuple((a + b) / 2 for a, b in zip(ts, ts[1:]))
    rates = tuple(c / ((a - b) / 1000) for c, a, b in zip(changes[1:], ts, ts[1:]))
    assert np.allclose(ChangeCurve(mids, rates).changes(ts), changes)


def calibration(size: str = "256x256") -> Calibration:
    return Calibration(size, FLAT, 0.3, 30.0, 31.5, 30, 4.0, 4, 1)


def test_a_calibration_file_is_read_back_and_refused_for_other_weights_or_when_corrupt(tmp_path):
    artifact = tmp_path / "m.onnx"
    assert calibration_file(artifact).name == "m.cache.json" and calibration_file(tmp_path).name == "cache.json"
    assert read_calibrations(artifact, {"source": "seeded"}) == {}
    weights = {"preset": "tiny", "source": "checkpoint", "sha256": "ab"}
    path = calibration_file(artifact)
    path.write_text(json.dumps({"schema": SCHEMA, "weights": weights, "calibrations": [calibration().to_dict()]}))
    assert read_calibrations(artifact, weights) == {"256x256": calibration()}
    with pytest.raises(InputError, match="calibrated for other weights than m.onnx holds; run ptdit-cache calibrate"):
        read_calibrations(artifact, {**weights, "sha256": "cd"})
    path.write_text(json.dumps({"schema": SCHEMA, "weights": weights, "calibrations": [{"size": "1x1"}]}))
    with pytest.raises(InputError, match="not a readable calibration"):
        read_calibrations(artifact, weights)
    path.write_text(json.dumps({"schema": "other/1"}))
    with pytest.raises(InputError, match="is not a cache calibration"):
        read_calibrations(artifact, weights)


def test_the_reuse_graphs_do_what_their_docstring_says():
    import onnxruntime as ort

    from ptdit.contract.reuse_graphs import reuse_graph, velocity_graph

    rng = np.random.default_rng(0)
    shape, steps = (1, 4, 8, 8), 5
    x, x_next, va, vb = (rng.standard_normal(shape, dtype=np.float32) for _ in range(4))
    table = rng.uniform(0.5, 2, steps).astype(np.float32)
    step = np.array([3], dtype=np.int64)
    (v,) = ort.InferenceSession(velocity_graph(shape, steps)).run(
        None, {"latent_next": x_next, "latent": x, "step": step, "inverse_dt": table})
    assert np.array_equal(v, (x_next - x) * table[3])
    wa, wb = table, table[::-1].copy()
    out, step_next = ort.InferenceSession(reuse_graph(shape, steps)).run(
        None, {"latent": x, "step": step, "velocity_a": va, "velocity_b": vb, "weight_a": wa, "weight_b": wb})
    assert np.array_equal(out, x + (va * wa[3] + vb * wb[3])) and step_next.tolist() == [4]
    assert not math.isnan(float(out.sum()))


def test_tensorrt_rtx_builds_the_reuse_graphs():
    """What a TensorRT step loop builds at its first cached loop, built ahead of time here (compute capability 8.9)."""
    trt = pytest.importorskip("tensorrt_rtx")
    from ptdit.contract.reuse_graphs import reuse_graph, velocity_graph
    from ptdit.contract.tensorrt import logger_for

    logger = logger_for(trt)
    shapes = [(1, 4, 32, 32), (1, 4, 12, 32, 32)]  # an image latent and a video one (rank 5, within TensorRT's 8)
    for graph in [make(shape, 1001) for shape in shapes for make in (velocity_graph, reuse_graph)]:
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        assert parser.parse(graph), [str(parser.get_error(i)) for i in range(parser.num_errors)]
        config = builder.create_builder_config()
        config.num_compute_capabilities = 1
        assert config.set_compute_capability(trt.ComputeCapability.SM89, 0)
        assert builder.build_serialized_network(network, config) is not None

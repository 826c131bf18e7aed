"""ptdit-bench runs and its two MAC counts agree. No timing is asserted: benchmarks report, tests check."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from bench.cli import main
from bench.complexity import complexity_rows, complexity_table, graph_counts
from bench.runtime_cost import runtime_rows, runtime_table
from ptdit import count_macs, preset

pytestmark = pytest.mark.slow  # exports, builds and runs many variants


def test_onnx_graph_count_agrees_with_the_model_count():
    cfg = preset("tiny")
    shapes = [(256, None), (256, 4)]
    counts = graph_counts(cfg, shapes, lambda line: None)
    for attention in ("proxy", "full"):
        for res, frames in shapes:
            macs = count_macs(cfg.replace(attention=attention), res, frames, batch=2, text_len=200)
            assert counts[(attention, res, frames)] == {"linear": macs.linear, "attention": macs.attention}


def test_complexity_table_and_json(tmp_path):
    rows = complexity_rows("xl", onnx=False, report=lambda line: None)
    assert [(r["res"], r["frames"]) for r in rows] == [
        (256, None), (512, None), (1024, None), (2048, None), ("1408x768", None), ("768x1408", None),
        ("1152x896", None), ("896x1152", None), (256, 8), (256, 16), (512, 8), (512, 16)]
    assert all(r["proxy"]["attention"] < r["full"]["attention"] for r in rows[4:])  # 1024's sizes and video
    # a size and its transpose cost the same; 16:9 has more tokens than 1024 x 1024 (1408 x 768 > 1024^2)
    assert rows[4]["proxy"] == rows[5]["proxy"] and rows[4]["proxy"]["attention"] > rows[2]["proxy"]["attention"]
    assert rows[2]["paper_ratio"] == 0.047 and abs(rows[2]["analytic_ratio"] - 0.0471) < 1e-4
    table = complexity_table(rows)
    assert "| 1024 | 4.71 % (4.7 %) |" in table and "n/a |" in table
    result = CliRunner().invoke(main, ["complexity", "--no-onnx", "--results", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert len(data["complexity"]) == 12 and data["machine"]["cores"] >= 1
    assert "| 1024 | 4.71 % (4.7 %) |" in result.stdout
    # --json means what it means on every command: the results on stdout (the table then goes to stderr)
    result = CliRunner().invoke(main, ["complexity", "--no-onnx", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["complexity"] == data["complexity"] and "| 1024 |" in result.stderr
    result = CliRunner().invoke(main, ["complexity", "--no-onnx", "--json", "b.json"])  # the old spelling
    assert result.exit_code == 2 and "pass --results b.json" in result.stderr
    result = CliRunner().invoke(main, ["complexity", "--preset", "xxl"])
    assert result.exit_code == 2 and "'xxl' is not one of" in result.output


def test_runtime_section_measures_both_backends_and_both_loops():
    data = runtime_rows([("tiny", 256, "fp32")], latency_steps=1, report=lambda line: None, loop_steps=4)
    backends = sorted(r["backend"].split(" ")[0] for r in data["latency"])
    assert backends == ["onnxruntime", "torch"] and data["overhead"][0]["calls"] > 0
    (loops,) = data["loops"]
    assert loops["step_artifact"] == "ptdit-tiny-256-b2-fp32-step.onnx" and loops["steps"] == 4
    assert loops["host_loop_ms_per_step"] > 0 and loops["step_loop_ms_per_step"] > 0 and loops["latent_rel_l2"] <= 1e-5
    nothing = {"to_device_bytes": 0, "from_device_bytes": 0, "syncs": 0}
    assert loops["step_loop_transfers"]["per_step_after_first_max"] == nothing
    assert loops["host_loop_transfers"]["per_step_after_first_max"]["from_device_bytes"] == 2 * 8 * 32 * 32 * 4
    table = runtime_table(data)
    assert "| ptdit-tiny-256-b2-fp32.onnx |" in table and "| ptdit-tiny-256-b2-fp32-step.onnx |" in table
    assert "| 98,312 B, 0 syncs | 0 B, 0 syncs | 16,384 B, 0 syncs |" in table


def test_export_section_measures_time_and_rss(tmp_path):
    result = CliRunner().invoke(main, ["export", "--preset", "tiny", "--res", "256", "--results",
                                       str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    measured = json.loads((tmp_path / "b.json").read_text())["export"][0]["measured"]
    assert measured["seconds"] > 0 and measured["peak_rss_bytes"] > 100e6 and measured["fp16_weight_bytes"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_gpu_section_is_skipped_without_cuda():
    result = CliRunner().invoke(main, ["gpu"])
    assert result.exit_code == 0 and "GPU: skipped (no CUDA device" in result.output


def test_build_section_builds_for_real_with_tensorrt_rtx(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    result = CliRunner().invoke(main, ["build", "--preset", "tiny", "--res", "256", "--config", "",
                                       "--config", "--opt-level 0", "--results", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "b.json").read_text())["build"]
    assert [r["options"] for r in rows] == ["(defaults)", "--opt-level 0"]
    for r in rows:
        assert r["builder"].startswith("tensorrt_rtx ") and r["layers"] > 1000
        assert r["build_seconds"] > 0 and r["plan_bytes"] > 1e6 and r["peak_rss_bytes"] > r["plan_bytes"]
    assert "| tiny | 256 | fp16 | --opt-level 0 |" in result.output


def test_all_runs_every_section_into_one_json(tmp_path, monkeypatch):
    """`all` composes the five sections (each replaced by a quick stand-in: the sections are tested above)."""
    from bench import build_cost, complexity, export_cost, gpu, runtime_cost

    monkeypatch.setattr(complexity, "complexity_rows", lambda *a: complexity_rows("tiny", False, lambda line: None))
    monkeypatch.setattr(export_cost, "run_export", lambda args: {
        "seconds": 1.0, "stage_seconds": {"trace": 0.5}, "peak_rss_bytes": 2e9, "artifact_bytes": 1,
        "fp16_weight_bytes": 1e9})
    monkeypatch.setattr(build_cost, "build_rows", lambda *a: [])
    monkeypatch.setattr(runtime_cost, "runtime_rows", lambda *a: {"overhead": [], "latency": []})
    monkeypatch.setattr(gpu, "gpu_rows", lambda *a: {"skipped": "stand-in"})
    result = CliRunner().invoke(main, ["all", "--results", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert set(data) == {"complexity", "export", "build", "runtime", "gpu", "machine"}
    assert [r["res"] for r in data["export"]] == [256, 512, 1024] and "## runtime" in result.output


def test_the_fp8_linear_comparison_covers_every_quantized_linear_call(tiny_model):
    """The GPU check's FP8 part runs on a CPU too (torch._scaled_mm has a CPU kernel); only its times need a GPU."""
    import copy

    import torch

    from bench import gpu

    model = copy.deepcopy(tiny_model).half()
    result = gpu.fp8_linear_rows(torch, model, 256, "cpu", lambda fn: (fn(), 1.0)[1])
    # each Linear is called once per forward: 24 per block (10 of them tcm-mlp's), and the caption projection's 2
    assert sum(r["count"] for r in result["shapes"]) == 2 * 24 + 2
    assert sum(r["count"] for r in result["shapes"] if r["kind"] in ("window_attention", "mlp")) == 2 * 6
    assert all(0 < r["fp8_rel_l2"] < 0.1 for r in result["shapes"])
    assert result["layer_sets"]["all"]["speedup"] == result["layer_sets"]["tcm-mlp"]["speedup"] == 1.0


def test_the_traffic_report_counts_the_copies_of_each_block():
    from bench import traffic

    rows = traffic.traffic_rows("tiny", (256,), "fp16", lambda line: None)
    row = rows[0]
    copies = row["copies_per_block"]
    assert copies["Transpose"] > 0 and copies["Slice"] > 0  # heads, proxies
    # The shift into and out of the shifted windows: one constant-order Gather each, no roll (Slice + Concat).
    assert copies["Gather"] == 2 and "Concat" not in copies
    assert 2 * row["copy_bytes_per_block"] <= row["copy_bytes"]  # two identical blocks, and the rest of the graph
    assert sum(copies.values()) * 2 <= sum(row["copies"].values())
    h100 = row["estimated_us_per_step"]["H100"]
    assert h100 == round(row["copy_bytes"] / 3350e9 * 1e6, 1) > 0


def test_the_fp8_report_measures_each_layer_kind_and_set():
    from bench import fp8_accuracy
    from ptdit.contract.fp8 import LAYER_KINDS

    rows = fp8_accuracy.fp8_accuracy_rows("tiny", 256, False, lambda line: None, timesteps=(900.0, 100.0))
    by = {(r["what"], r["calibration"]): r for r in rows}
    assert {f"kind {k}" for k, _ in LAYER_KINDS} <= {what for what, _ in by}
    assert all(0 < e < 0.3 for r in rows for e in r["rel_l2"]) and all(len(r["rel_l2"]) == 2 for r in rows)
    tcm, every = by[("set tcm-mlp", "ptdit (max)")], by[("set all", "ptdit (max)")]
    assert tcm["layers"] < every["layers"] < by[("every kind", "ptdit (max)")]["layers"]
    assert max(tcm["rel_l2"]) < max(every["rel_l2"])  # the measurement the default layer set rests on
    assert ("set tcm-mlp", "ptdit (percentile)") in by
    assert "| tiny | 256 | kind mlp | ptdit (max) |" in fp8_accuracy.fp8_accuracy_table(rows)


def test_fp8_report_without_modelopt_says_how_to_get_it(monkeypatch):
    import sys

    from click.testing import CliRunner

    from bench.cli import main

    monkeypatch.setitem(sys.modules, "modelopt", None)  # as where nvidia-modelopt is not installed
    monkeypatch.setitem(sys.modules, "modelopt.torch", None)
    monkeypatch.setitem(sys.modules, "modelopt.torch.quantization", None)
    result = CliRunner().invoke(main, ["fp8", "--preset", "tiny", "--modelopt"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "--modelopt needs NVIDIA ModelOpt" in result.output and "pip install nvidia-modelopt" in result.output


def test_the_video_section_runs_the_pipeline_and_each_chunk_in_its_own_process(video_pipeline, pipelines, tmp_path):
    """ptdit-bench video on a folder: one ptdit-run to an .mp4 (its stage times and frame count), then each decoder
    chunk shape in a fresh process, whose peak RSS includes what it had once the session was loaded."""
    result = CliRunner().invoke(main, ["video", "--folder", str(video_pipeline), "--steps", "1", "--results",
                                       str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "b.json").read_text())["video"]
    assert data["latent_frames"] == 12 and data["chunk_ranges"] == [[0, 8], [7, 12]] and "export" not in data
    assert data["run"]["video"] == [45, 256, 256, 3] and set(data["run"]["stages"]) == {"encode", "sample", "decode"}
    chunks = {c["shape"]: c for c in data["chunks"]}
    assert chunks["8x32x32"]["image"] == [1, 3, 29, 256, 256] and chunks["5x32x32"]["image"] == [1, 3, 17, 256, 256]
    own = {shape: c["peak_rss_bytes"] - c["loaded_peak_rss_bytes"] for shape, c in chunks.items()}
    assert all(c["seconds"] > 0 and c["loaded_peak_rss_bytes"] > 0 for c in chunks.values()) and min(own.values()) > 0
    # each child's own peak, not pytest's RSS at the fork; and the decode holds one chunk's activations at a time
    # (measured 1.9 GB, against 1.6 + 1.1 GB of the two chunks alone; 3.0 GB when ONNX Runtime kept both)
    assert data["run"]["peak_rss_bytes"] < own["8x32x32"] + own["5x32x32"]
    assert "| decode one 8x32x32 chunk (29 frames) |" in result.output
    for folder, message in ((tmp_path, "has no pipeline.json: pass a folder of ptdit-export --pipeline --frames F"),
                            (pipelines[256], "is an image pipeline: ptdit-bench video takes a video pipeline folder")):
        refused = CliRunner().invoke(main, ["video", "--folder", str(folder)])
        assert refused.exit_code == 2 and message in refused.stderr
    refused = CliRunner().invoke(main, ["video", "--folder", str(video_pipeline), "--frames", "4"])
    assert refused.exit_code == 2 and "--res and --frames choose the exported pipeline" in refused.stderr


@pytest.mark.slow
def test_sizes_section_compares_one_size_with_several():
    from bench.sizes_cost import sizes_rows, sizes_table

    result = sizes_rows("tiny", ["512x256", "256x512"], "fp16", build=True, report=lambda line: None)
    one, both = result["exports"]
    assert (one["graphs"], both["graphs"]) == (1, 2)
    # the weights are stored once: two sizes take far less than twice the disk of one
    assert 1.0 < result["ratios"]["disk_bytes"] < 1.5
    graphs = ["ptdit-tiny-512x256-b2-fp16.onnx", "ptdit-tiny-256x512-b2-fp16.onnx"]
    assert [b["graph"] for b in result["builds"]] == graphs
    assert all(b["plan_bytes"] > 0 for b in result["builds"])
    # TensorRT-RTX's own figures of each engine's device memory, logged at build time (no GPU here)
    assert all(b["device_memory"]["weights"] > 0 and b["device_memory"]["activation"] > 0 for b in result["builds"])
    assert "| ratio |" in sizes_table(result)

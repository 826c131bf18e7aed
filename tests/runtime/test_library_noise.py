"""Libraries that write to the terminal on their own are quiet, and what they would have said comes from the
project, in one line: ONNX Runtime's default logger (a CUDA provider that cannot start), gRPC's C core (a bad server
address; tests/runtime/test_serve.py runs ptdit-run --server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ptdit.contract.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def text_encoder(folder: Path) -> Path:
    return folder / json.loads((folder / "pipeline.json").read_text())["text_encoder"]["onnx"]


def test_a_cuda_provider_that_cannot_start_is_said_once_not_logged(pipelines, monkeypatch, capfd):
    """On a machine where onnxruntime-gpu's CUDA provider cannot start (here: no GPU, a stand-in says one is
    visible), ONNX Runtime falls back to its CPU provider and logs red lines of its own. --device cuda is refused in
    one line; auto runs on the CPU and says so; ONNX Runtime writes nothing to the terminal."""
    import onnxruntime as ort

    from runtime.backends import onnxruntime_session
    from runtime.session import open_session

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider")
    monkeypatch.setattr(onnxruntime_session, "gpu_visible", lambda: True)
    onnx = text_encoder(pipelines[256])
    with pytest.raises(InputError, match=r"ONNX Runtime could not start its CUDA provider \(onnxruntime-gpu needs "
                                         r"the CUDA and cuDNN libraries it was built for\): install them, or use "
                                         r"device='cpu'"):
        open_session(str(onnx), "onnxruntime", "cuda")
    with open_session(str(onnx), "onnxruntime", "auto") as session:
        assert session.backend == "onnxruntime (CPUExecutionProvider)" and session.device == "cpu"
    assert capfd.readouterr().err == ""


def test_grpc_is_quiet_and_the_address_is_checked_before_it_loads():
    """A bad address is refused before tritonclient (and gRPC's C core, which logs on its own) is imported."""
    code = ("import sys\nfrom runtime.serve.client import PipelineClient\n"
            "from ptdit.contract.errors import InputError\n"
            "try:\n    PipelineClient('')\nexcept InputError as e:\n    print(e)\n"
            "print('grpc' in sys.modules, 'tritonclient' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stderr == ""
    assert result.stdout.splitlines() == ["the server address '' is empty: pass the gRPC address of ptdit-serve run "
                                          "as HOST:PORT, e.g. localhost:8001", "False False"]

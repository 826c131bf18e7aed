"""Opening a session on an artifact, whichever backend runs it; the samplers and the CLIs never know which one
they drive (the interface: runtime.backends.interface.Session).

    with open_session("artifacts/ptdit-xl-1024-b2-fp16.onnx") as session:
        session.set_inputs({"text_embeds": text, "text_mask": mask})      # once: stays where the backend keeps it
        session.set_inputs({"latent": x, "timestep": t})                  # every step
        noise_pred = session.run()["noise_pred"]                          # numpy, on the host
"""

from __future__ import annotations

import importlib.util

from ptdit.contract.errors import InputError

from .artifact import Artifact, load_artifact
from .backends.interface import Session
from .backends.tensorrt.flavour import TensorRTOptions

BACKENDS = ("tensorrt", "onnxruntime", "torch")


def resolve_backend(artifact: Artifact, backend: str, tensorrt: TensorRTOptions | None = None) -> str:
    """The backend that runs `artifact`; options of a TensorRT plan's run given for another are refused (they
    would be silently ignored)."""
    chosen = _backend_for(artifact, backend)
    given = tensorrt.given() if tensorrt is not None else []
    if given and chosen != "tensorrt":
        raise InputError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to a TensorRT plan "
                         f"only, and {artifact.path.name} runs on {chosen}: drop {'them' if len(given) > 1 else 'it'}")
    return chosen


def _backend_for(artifact: Artifact, backend: str) -> str:
    if backend == "auto":
        return "tensorrt" if artifact.kind == "plan" else "onnxruntime"
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}: use auto, {', '.join(BACKENDS)}")
    if backend == "tensorrt" and artifact.kind != "plan":
        raise InputError(f"the tensorrt backend runs .plan files; build one with ptdit-build {artifact.path.name}")
    if backend == "onnxruntime" and artifact.kind != "onnx":
        raise InputError("the onnxruntime backend runs .onnx files; pass the ONNX the plan was built from")
    return backend


def require(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise InputError(f"{module} is not installed: {install}")


def open_session(path: str, backend: str = "auto", device: str = "auto", verify: bool = True,
                 torch_precision: str | None = None, tensorrt: TensorRTOptions | None = None) -> Session:
    """backend: auto (plan -> tensorrt, onnx -> onnxruntime), tensorrt, onnxruntime, torch.
    device: auto / cpu / cuda, for onnxruntime (provider) and torch. torch_precision: the PyTorch model's
    precision policy (default: the artifact's). tensorrt: what a plan needs from the run (runtime cache
    directory, lean runtime, weight-streaming budget)."""
    artifact = load_artifact(path, verify=verify)
    chosen = resolve_backend(artifact, backend, tensorrt)
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device {device!r}: use auto, cpu or cuda")
    if chosen == "tensorrt" and device == "cpu":
        raise InputError(f"{artifact.path.name} is a TensorRT plan, which runs on the GPU only: drop device cpu, or "
                         f"run the ONNX it was built from")
    if chosen == "tensorrt":
        from .backends.tensorrt.session import TensorRTSession

        return TensorRTSession(artifact, tensorrt or TensorRTOptions())
    if chosen == "onnxruntime":
        require("onnxruntime", "pip install onnxruntime-gpu (or onnxruntime)")
        from .backends.onnxruntime_session import OnnxRuntimeSession

        return OnnxRuntimeSession(artifact, device)
    require("torch", "pip install torch")
    from .backends.torch_session import TorchSession

    return TorchSession(artifact, device, torch_precision)

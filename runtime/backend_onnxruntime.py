"""ONNX Runtime backend: CPU, or CUDA when onnxruntime-gpu sees a GPU. Inputs that are set once (the text)
are bound once; on CUDA they stay on the device."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .artifact import Artifact
from .errors import InputError, RuntimeFailure
from .tensors import HostFeeds
from .transfers import Transfers

BF16, FLOAT = 16, 1  # onnx.TensorProto element types
ELEM_TYPES = {"float32": FLOAT, "float16": 10, "bfloat16": BF16}


def bf16_as_fp32(model: Any) -> Any:
    """fp32 twin of a shape-inferred bf16 graph that rounds every bf16 tensor to bf16 as soon as it is
    produced (Cast to bf16 and back): bf16 storage with fp32 arithmetic, for providers without bf16 kernels
    (ONNX Runtime's CPU provider). export/parity.py does the same for the export check; the stages share no
    code."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph  # value_info must hold the inferred types
    for i, init in enumerate(graph.initializer):
        if init.data_type == BF16:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    bf16_values = set()
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == BF16:
            value.type.tensor_type.elem_type = FLOAT
            bf16_values.add(value.name)
    nodes = []
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == BF16:
                attr.i = FLOAT
        nodes.append(node)
        for k, out in enumerate(node.output):
            if out in bf16_values:
                node.output[k] = f"{out}__fp32"
                nodes.append(onnx.helper.make_node("Cast", [f"{out}__fp32"], [f"{out}__bf16"], to=BF16))
                nodes.append(onnx.helper.make_node("Cast", [f"{out}__bf16"], [out], to=FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    return model


class OnnxRuntimeSession:
    def __init__(self, artifact: Artifact, device: str = "auto", extra_outputs: list[str] | None = None):
        import onnxruntime as ort

        available = ort.get_available_providers()
        want_cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available and _gpu_visible()
        if device == "cuda" and not want_cuda:
            raise InputError("device cuda needs onnxruntime-gpu and a visible CUDA GPU; use --device cpu")
        self.provider = "CUDAExecutionProvider" if want_cuda else "CPUExecutionProvider"
        self.artifact = artifact
        self.backend = f"onnxruntime ({self.provider})"
        self._feeds = HostFeeds(artifact.inputs)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        emulate_bf16 = self.provider == "CPUExecutionProvider" and artifact.precision == "bf16"
        path = self._runnable_path(artifact.path, extra_outputs or [], emulate_bf16)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=[self.provider])
        except Exception as e:  # ORT raises its own exception types for corrupt or unsupported files
            raise InputError(f"ONNX Runtime cannot load {artifact.path.name} ({str(e).splitlines()[0]})") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._binding = self.session.io_binding()
        self._device = "cuda" if want_cuda else "cpu"
        self.transfers = Transfers()

    def _runnable_path(self, path: Path, extra_outputs: list[str], emulate_bf16: bool) -> Path:
        """The file itself, or a rewritten copy: bf16 on CPU, or extra tensors marked as outputs. Works past
        protobuf's 2 GiB limit: shapes are inferred file to file and the weights are attached afterwards."""
        if not emulate_bf16 and not extra_outputs:
            return path
        import onnx
        from onnx.external_data_helper import load_external_data_for_model

        self._tmp = tempfile.TemporaryDirectory(prefix="ptdit-ort-")
        work = Path(self._tmp.name)
        try:
            model = onnx.load(str(path), load_external_data=False)
            if emulate_bf16:
                inferred = work / "inferred.onnx"
                onnx.shape_inference.infer_shapes_path(str(path), str(inferred))
                model.graph.ClearField("value_info")
                model.graph.value_info.extend(onnx.load(str(inferred), load_external_data=False).graph.value_info)
                inferred.unlink()
            load_external_data_for_model(model, str(path.parent))
        except Exception as e:  # protobuf's DecodeError and friends
            raise InputError(f"ONNX Runtime cannot load {path.name} ({e})") from None
        if extra_outputs:
            blocks = self.artifact.manifest["block_outputs"]
            produced = {o for node in model.graph.node for o in node.output}
            missing = [n for n in extra_outputs if n not in produced]
            if missing:
                raise InputError(f"tensors {missing[:3]} are not in {path.name}")
            elem = ELEM_TYPES[blocks["dtype"]]
            model.graph.output.extend(onnx.helper.make_tensor_value_info(n, elem, blocks["shape"]) for n in extra_outputs)
        if emulate_bf16:
            model = bf16_as_fp32(model)
        target = work / path.name
        # onnx checks whether `location` exists relative to the working directory, so it gets a unique name.
        onnx.save(model, str(target), save_as_external_data=True, location=f"{work.name}.data", size_threshold=1024)
        return target

    def set_inputs(self, feeds: Mapping[str, Any]) -> None:
        import onnxruntime as ort

        for name, value in self._feeds.update(feeds).items():
            self.transfers.to_device_bytes += value.nbytes
            if self._device == "cuda":
                self._binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
            else:
                self._binding.bind_cpu_input(name, value)

    def run(self) -> dict[str, np.ndarray]:
        self._feeds.complete()
        for name in self.output_names:
            self._binding.bind_output(name, "cpu")
        self._run(self._binding)
        outputs = dict(zip(self.output_names, self._binding.copy_outputs_to_cpu()))
        self.transfers.from_device_bytes += sum(v.nbytes for v in outputs.values())
        return outputs

    def _run(self, binding: Any) -> None:
        try:
            self.session.run_with_iobinding(binding)
        except Exception as e:
            raise RuntimeFailure(f"ONNX Runtime failed: {str(e).splitlines()[0]}") from None
        if self._device == "cuda":  # ONNX Runtime's CUDA run returns once the device is done
            self.transfers.syncs += 1

    def step_loop(self, carry: Mapping[str, str]) -> OnnxRuntimeStepLoop:
        return OnnxRuntimeStepLoop(self, carry)

    def bare_call(self) -> None:
        """The backend call alone: run on what is bound, outputs left in ONNX Runtime's buffers (the baseline
        of the overhead benchmark)."""
        self.session.run_with_iobinding(self._binding)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class OnnxRuntimeStepLoop:
    """Two I/O bindings, one per step parity, over OrtValues that stay in ONNX Runtime's memory (on the GPU with
    the CUDA provider): parity 0 reads buffer A of each carried pair and writes buffer B, parity 1 the reverse."""

    def __init__(self, session: OnnxRuntimeSession, carry: Mapping[str, str]):
        self.session, self.carry = session, dict(carry)
        self.values: dict[str, Any] = {}
        self.bindings: list[Any] = []
        self.last = -1

    def start(self, feeds: Mapping[str, np.ndarray]) -> None:
        import onnxruntime as ort

        s = self.session
        s._feeds.update(feeds)
        values = s._feeds.complete()
        self.values = {name: ort.OrtValue.ortvalue_from_numpy(v, s._device, 0) for name, v in values.items()
                       if name not in self.carry}
        for name in self.carry:  # buffers of ONNX Runtime's own, written by the steps: A holds the initial state
            v = values[name]
            for buffer in (name, f"{name}:b"):
                self.values[buffer] = ort.OrtValue.ortvalue_from_shape_and_type(v.shape, v.dtype, s._device, 0)
            self.values[name].update_inplace(v)
        s.transfers.to_device_bytes += sum(v.nbytes for v in values.values())
        for parity in (0, 1):
            binding = s.session.io_binding()
            for name, value in self.values.items():
                if name not in self.carry and not name.endswith(":b"):
                    binding.bind_ortvalue_input(name, value)
            for name, output in self.carry.items():
                read, write = (name, f"{name}:b") if parity == 0 else (f"{name}:b", name)
                binding.bind_ortvalue_input(name, self.values[read])
                binding.bind_ortvalue_output(output, self.values[write])
            self.bindings.append(binding)
        self.last = -1

    def step(self, index: int) -> None:
        self.session._run(self.bindings[index % 2])
        self.last = index

    def finish(self) -> np.ndarray:
        name = "latent" if self.last % 2 else "latent:b"  # where the last step wrote (A when none ran: -1 % 2 == 1)
        latent: np.ndarray = self.values[name].numpy()
        self.session.transfers.from_device_bytes += latent.nbytes
        return latent

    def close(self) -> None:
        self.bindings.clear()
        self.values.clear()


def _gpu_visible() -> bool:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return False
    err, count = cudart.cudaGetDeviceCount()
    return err == cudart.cudaError_t.cudaSuccess and count > 0

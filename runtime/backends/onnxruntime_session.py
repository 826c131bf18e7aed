"""ONNX Runtime backend: CPU, or CUDA when onnxruntime-gpu sees a GPU. Inputs that are set once (the text)
are bound once; on CUDA they stay on the device. A bf16 artifact runs on the CPU provider as its fp32 twin
(ptdit.contract.bf16), as the export's check runs it."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ptdit.contract.bf16 import emulate_bf16
from ptdit.contract.dtypes import ONNX_ELEMENT_TYPES, onnxruntime_dtype_name
from ptdit.contract.errors import InputError, option
from ptdit.contract.fp8 import FP8, ONNXRUNTIME_DISABLED_OPTIMIZERS
from ptdit.contract.graph_check import check_io, check_onnx
from ptdit.contract.onnx_manifest import OnnxManifest, TensorSpec
from ptdit.contract.reuse_graphs import reuse_graph, velocity_graph

from ..artifact import Artifact
from ..errors import RuntimeFailure
from .feeds import HostFeeds
from .interface import ReuseTables, Session, StepLoop
from .transfers import Transfers

# ONNX Runtime's idle worker threads spin by default, which suits one process running one session after another.
# A process that shares the CPU with others (a model inside Triton) sets this to False: on the 2-core machine the
# spinning threads of a served pipeline kept Triton's own threads off the cores, and its next request waited 188 ms
# in the queue (0.1 ms with it off). In-process the difference is within the noise.
SPIN_IDLE_THREADS = True


class OnnxRuntimeSession(Session):
    def __init__(self, artifact: Artifact, device: str = "auto", extra_outputs: list[str] | None = None):
        import onnxruntime as ort

        available = ort.get_available_providers()
        want_cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available and gpu_visible()
        if device == "cuda" and not want_cuda:
            raise InputError(f"{option('device', 'cuda')} needs onnxruntime-gpu and a visible CUDA GPU; use "
                             f"{option('device', 'cpu')}")
        self.provider = "CUDAExecutionProvider" if want_cuda else "CPUExecutionProvider"
        self.device = "cuda" if want_cuda else "cpu"
        self.artifact = artifact
        self.backend = f"onnxruntime ({self.provider})"
        self.feeds = HostFeeds(artifact.inputs)
        self.transfers = Transfers()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._reuse: dict[str, Any] = {}
        self._reuse_steps = 0
        # The project's own check first, on the proto without its weights: a graph its manifest does not describe
        # (an FP8 graph whose manifest says fp16) is refused in the project's words, not in ONNX Runtime's.
        assert isinstance(artifact.manifest, OnnxManifest)
        check_onnx(artifact.path, artifact.manifest)
        quiet_onnxruntime(ort)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if not SPIN_IDLE_THREADS:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        bf16_twin = self.provider == "CPUExecutionProvider" and artifact.precision == "bf16"
        try:
            path = self._runnable_path(artifact.path, extra_outputs or [], bf16_twin)
            disabled = list(ONNXRUNTIME_DISABLED_OPTIMIZERS) if artifact.precision == FP8 else None
            self.ort_session = ort.InferenceSession(str(path), options, providers=[self.provider],
                                                    disabled_optimizers=disabled)
        except InputError:
            self.close()
            raise
        except Exception as e:  # ORT raises its own exception types for corrupt or unsupported files
            self.close()
            raise InputError(f"ONNX Runtime cannot load {artifact.path.name} ({str(e).splitlines()[0]})") from None
        self._check_provider(device)
        if path != artifact.path:  # our own rewrite of the file check_onnx read: it must still be that graph
            self._check_rewrite(set(extra_outputs or []), bf16_twin)
        self.output_names = [o.name for o in self.ort_session.get_outputs()]
        self._binding = self.ort_session.io_binding()
        self._run_options = ort.RunOptions()
        if artifact.export.graph == "vae_decoder" and len(artifact.spec("latent").shape) == 5:
            # A video chunk's activations dwarf its weights (gigabytes) and ONNX Runtime's arena keeps them after the
            # run, once per session: a pipeline's chunk sessions would hold the sum. Shrunk, it holds one run's.
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage",
                                                   "gpu:0" if self.device == "cuda" else "cpu:0")

    def _check_provider(self, device: str) -> None:
        """ONNX Runtime falls back to its CPU provider without a word when the CUDA one cannot start (the CUDA or
        cuDNN libraries onnxruntime-gpu was built for are missing): --device cuda refuses, auto says what runs."""
        running = self.ort_session.get_providers()[0]
        if running == self.provider:
            return
        if device == "cuda":
            self.close()
            raise InputError(f"ONNX Runtime could not start its CUDA provider (onnxruntime-gpu needs the CUDA and "
                             f"cuDNN libraries it was built for): install them, or use {option('device', 'cpu')}")
        self.provider, self.device, self.backend = running, "cpu", f"onnxruntime ({running})"

    def _check_rewrite(self, extra_outputs: set[str], bf16_twin: bool) -> None:
        """The rewritten copy ONNX Runtime loaded (the bf16 twin, extra outputs) has the I/O the manifest describes."""
        def spec(t: Any) -> TensorSpec:
            return TensorSpec(t.name, tuple(t.shape), onnxruntime_dtype_name(t.type))

        def wanted(specs: list[TensorSpec]) -> list[TensorSpec]:  # the bf16 twin runs in fp32
            return [replace(t, dtype="float32") if bf16_twin and t.dtype == "bfloat16" else t for t in specs]

        session, path, manifest = self.ort_session, self.artifact.path, self.artifact.manifest
        assert isinstance(manifest, OnnxManifest)
        try:
            check_io(path, wanted(manifest.inputs), wanted(manifest.outputs), [spec(t) for t in session.get_inputs()],
                     [spec(t) for t in session.get_outputs() if t.name not in extra_outputs])
        except InputError:
            self.close()
            raise

    def _runnable_path(self, path: Path, extra_outputs: list[str], bf16_twin: bool) -> Path:
        """The file itself, or a rewritten copy: bf16 on CPU, or extra tensors marked as outputs. Works past
        protobuf's 2 GiB limit: shapes are inferred without the weights, which are attached afterwards."""
        if not bf16_twin and not extra_outputs:
            return path
        import onnx
        from onnx.external_data_helper import load_external_data_for_model

        self._tmp = tempfile.TemporaryDirectory(prefix="ptdit-ort-")
        work = Path(self._tmp.name)
        try:
            model = onnx.load(str(path), load_external_data=False)
            if bf16_twin:  # inferred in memory (the weights stay external): a file could be cut short unnoticed
                inferred = onnx.shape_inference.infer_shapes(model)
                model.graph.ClearField("value_info")
                model.graph.value_info.extend(inferred.graph.value_info)
            load_external_data_for_model(model, str(path.parent))
        except Exception as e:  # protobuf's DecodeError and friends
            raise InputError(f"ONNX Runtime cannot load {path.name} ({e})") from None
        if extra_outputs:
            blocks = self.artifact.block_outputs
            produced = {o for node in model.graph.node for o in node.output}
            missing = [n for n in extra_outputs if n not in produced]
            if missing:
                raise InputError(f"tensors {missing[:3]} are not in {path.name}")
            elem = ONNX_ELEMENT_TYPES[str(blocks.dtype)]
            model.graph.output.extend(onnx.helper.make_tensor_value_info(n, elem, blocks.shape) for n in extra_outputs)
        if bf16_twin:
            model = emulate_bf16(model)
        target = work / path.name
        # onnx checks whether `location` exists relative to the working directory, so it gets a unique name.
        onnx.save(model, str(target), save_as_external_data=True, location=f"{work.name}.data", size_threshold=1024)
        return target

    def set_inputs(self, feeds: Mapping[str, Any]) -> None:
        import onnxruntime as ort

        for name, value in self.feeds.update(feeds).items():
            self.transfers.to_device_bytes += value.nbytes
            if self.device == "cuda":
                self._binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
            else:
                self._binding.bind_cpu_input(name, value)

    def run(self) -> dict[str, np.ndarray]:
        self.feeds.complete()
        for name in self.output_names:
            self._binding.bind_output(name, "cpu")
        self.run_binding(self._binding)
        outputs = dict(zip(self.output_names, self._binding.copy_outputs_to_cpu()))
        self.transfers.from_device_bytes += sum(v.nbytes for v in outputs.values())
        return outputs

    def run_binding(self, binding: Any) -> None:
        """One run on an I/O binding of this session's."""
        try:
            self.ort_session.run_with_iobinding(binding, self._run_options)
        except Exception as e:
            raise RuntimeFailure(f"ONNX Runtime failed: {str(e).splitlines()[0]}") from None
        if self.device == "cuda":  # ONNX Runtime's CUDA run returns once the device is done
            self.transfers.syncs += 1

    def step_loop(self, carry: Mapping[str, str]) -> OnnxRuntimeStepLoop:
        return OnnxRuntimeStepLoop(self, carry)

    def reuse_sessions(self, shape: tuple[int, ...], steps: int) -> dict[str, Any]:
        """The step loop's velocity and reuse graphs (ptdit.contract.reuse_graphs) for `steps`, made once."""
        import onnxruntime as ort

        if self._reuse_steps != steps:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = 1  # elementwise work: no thread pool to spin beside the step graph's
            options.inter_op_num_threads = 1
            self._reuse = {name: ort.InferenceSession(graph, options, providers=[self.provider])
                           for name, graph in (("velocity", velocity_graph(shape, steps)),
                                               ("reuse", reuse_graph(shape, steps)))}
            self._reuse_steps = steps
        return self._reuse

    def bare_call(self) -> None:
        """The backend call alone: run on what is bound, outputs left in ONNX Runtime's buffers (the baseline
        of the overhead benchmark)."""
        self.ort_session.run_with_iobinding(self._binding)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class OnnxRuntimeStepLoop(StepLoop):
    """Two I/O bindings, one per step parity, over OrtValues that stay in ONNX Runtime's memory (on the GPU with
    the CUDA provider): parity 0 reads buffer A of each carried pair and writes buffer B, parity 1 the reverse."""

    def __init__(self, session: OnnxRuntimeSession, carry: Mapping[str, str]):
        self.session, self.carry = session, dict(carry)
        self.values: dict[str, Any] = {}
        self.bindings: list[Any] = []
        self.last = -1
        self.reuse: dict[str, Any] = {}  # with step caching: the two small graphs' sessions
        self.computed = 0  # steps computed so far: the velocity of the k-th went to slot k % 2

    def start(self, feeds: Mapping[str, np.ndarray], reuse: ReuseTables | None = None) -> None:
        import onnxruntime as ort

        s = self.session
        s.feeds.update(feeds)
        values = s.feeds.complete()
        self.values = {name: ort.OrtValue.ortvalue_from_numpy(v, s.device, 0) for name, v in values.items()
                       if name not in self.carry}
        for name in self.carry:  # buffers of ONNX Runtime's own, written by the steps: A holds the initial state
            v = values[name]
            for buffer in (name, f"{name}:b"):
                self.values[buffer] = ort.OrtValue.ortvalue_from_shape_and_type(v.shape, v.dtype, s.device, 0)
            self.values[name].update_inplace(v)
        s.transfers.to_device_bytes += sum(v.nbytes for v in values.values())
        for parity in (0, 1):
            binding = s.ort_session.io_binding()
            for name, value in self.values.items():
                if name not in self.carry and not name.endswith(":b"):
                    binding.bind_ortvalue_input(name, value)
            for name, output in self.carry.items():
                read, write = (name, f"{name}:b") if parity == 0 else (f"{name}:b", name)
                binding.bind_ortvalue_input(name, self.values[read])
                binding.bind_ortvalue_output(output, self.values[write])
            self.bindings.append(binding)
        self.last = -1
        if reuse is not None:
            self._start_reuse(reuse)

    def _start_reuse(self, tables: ReuseTables) -> None:
        import onnxruntime as ort

        s, shape = self.session, self.values["latent"].shape()
        steps = tables.inverse_dt.shape[0]
        self.reuse = s.reuse_sessions(tuple(shape), steps)
        zeros = np.zeros(shape, dtype=np.float32)  # a slot not yet written is weighted 0, and must not be NaN
        uploads = {**tables.arrays(), "velocity:0": zeros, "velocity:1": zeros}
        for name, value in uploads.items():  # ONNX Runtime's own memory: a CPU OrtValue would wrap the array
            self.values[name] = ort.OrtValue.ortvalue_from_shape_and_type(value.shape, value.dtype, s.device, 0)
            self.values[name].update_inplace(value)
        s.transfers.to_device_bytes += sum(v.nbytes for v in uploads.values())
        self.computed = 0

    def _buffers(self, index: int) -> tuple[str, str]:
        """(read, write) suffixes of step `index`'s carried pairs."""
        return ("", ":b") if index % 2 == 0 else (":b", "")

    def step(self, index: int) -> None:
        self.session.run_binding(self.bindings[index % 2])
        self.last = index
        if self.reuse:  # keep the velocity this step applied
            read, write = self._buffers(index)
            binding = self.reuse["velocity"].io_binding()
            for name, value in (("latent_next", f"latent{write}"), ("latent", f"latent{read}"),
                                ("step", f"step{read}"), ("inverse_dt", "inverse_dt")):
                binding.bind_ortvalue_input(name, self.values[value])
            binding.bind_ortvalue_output("velocity", self.values[f"velocity:{self.computed % 2}"])
            self._run(self.reuse["velocity"], binding)
            self.computed += 1

    def skip(self, index: int) -> None:
        if not self.reuse or not self.computed:
            raise RuntimeFailure("a skipped step needs the loop started with reuse tables and a computed step first")
        read, write = self._buffers(index)
        binding = self.reuse["reuse"].io_binding()
        for name, value in (("latent", f"latent{read}"), ("step", f"step{read}"),
                            ("velocity_a", f"velocity:{(self.computed - 1) % 2}"),
                            ("velocity_b", f"velocity:{self.computed % 2}"),
                            ("weight_a", "weight_a"), ("weight_b", "weight_b")):
            binding.bind_ortvalue_input(name, self.values[value])
        binding.bind_ortvalue_output("latent_next", self.values[f"latent{write}"])
        binding.bind_ortvalue_output("step_next", self.values[f"step{write}"])
        self._run(self.reuse["reuse"], binding)
        self.last = index

    def _run(self, session: Any, binding: Any) -> None:
        try:
            session.run_with_iobinding(binding)
        except Exception as e:
            raise RuntimeFailure(f"ONNX Runtime failed in a cached step: {str(e).splitlines()[0]}") from None
        if self.session.device == "cuda":
            self.session.transfers.syncs += 1

    def finish(self) -> np.ndarray:
        name = "latent" if self.last % 2 else "latent:b"  # where the last step wrote (A when none ran: -1 % 2 == 1)
        latent: np.ndarray = self.values[name].numpy()
        self.session.transfers.from_device_bytes += latent.nbytes
        return latent

    def close(self) -> None:
        self.bindings.clear()
        self.values.clear()
        self.reuse = {}  # the session's own: kept for its later loops


def quiet_onnxruntime(ort: Any) -> None:
    """ONNX Runtime's default logger (the environment's: provider registration, a CUDA provider that cannot start)
    writes to the terminal on its own, before any session's severity applies: nothing below fatal. Its errors reach
    the project as exceptions or as the provider in effect (_check_provider), which the project says in one line."""
    ort.set_default_logger_severity(4)


def gpu_visible() -> bool:
    """Whether cuda-python sees a CUDA GPU (False without cuda-python)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return False
    err, count = cudart.cudaGetDeviceCount()
    return err == cudart.cudaError_t.cudaSuccess and count > 0

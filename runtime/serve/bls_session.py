"""A Session whose graph is a model of the same Triton server (business-logic scripting): the served pipeline's
components as Triton schedules them (tensorrt_plan models on every GPU, or Python-backend ONNX Runtime models on
the CPU), driven by the project's own sampler and tiled decode. Runs inside Triton's Python backend only.

Every call moves its inputs and outputs through the host (outputs are asked for in CPU memory): for the
transformer that is the latent and the text features of each step, small beside the step itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ptdit.contract.errors import Failure
from ptdit.contract.manifests import read_manifest
from ptdit.contract.onnx_manifest import OnnxManifest
from ptdit.contract.plan_manifest import PlanManifest

from ..artifact import Artifact
from ..backends.feeds import HostFeeds
from ..backends.interface import ReuseTables
from ..backends.transfers import Transfers


def manifest_artifact(path: Path) -> Artifact:
    """The artifact of a component from its manifest alone (its .onnx or .plan is in the component's model)."""
    json_path = path.with_suffix(".json")
    missing = f"{json_path} is missing: rewrite the repository with ptdit-serve repository"
    manifest: OnnxManifest | PlanManifest = (read_manifest(PlanManifest, json_path, "this .plan", missing)
                                             if path.suffix == ".plan" else
                                             read_manifest(OnnxManifest, json_path, "this .onnx", missing))
    return Artifact(path, manifest)


class TritonModelSession:
    """The Session interface (runtime.backends.interface) over the Triton model `model_name`."""

    def __init__(self, model_name: str, artifact: Artifact) -> None:
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        self.model_name, self.artifact = model_name, artifact
        self.backend = f"triton model {model_name}"
        self.feeds = HostFeeds(artifact.inputs)
        self.transfers = Transfers()
        self._outputs = [t.name for t in artifact.outputs]

    def set_inputs(self, feeds: Mapping[str, Any]) -> None:
        self.feeds.update(feeds)

    def run(self) -> dict[str, np.ndarray]:
        pb = self._pb
        inputs = [pb.Tensor(name, np.ascontiguousarray(array)) for name, array in self.feeds.complete().items()]
        request = pb.InferenceRequest(model_name=self.model_name, requested_output_names=self._outputs, inputs=inputs,
                                      preferred_memory=pb.PreferredMemory(pb.TRITONSERVER_MEMORY_CPU, 0))
        answer = request.exec()
        if answer.has_error():
            raise Failure(f"the model {self.model_name} failed: {answer.error().message()}")
        return {name: pb.get_output_tensor_by_name(answer, name).as_numpy() for name in self._outputs}

    def step_loop(self, carry: Mapping[str, str]) -> HostStepLoop:
        return HostStepLoop(self, carry)

    def close(self) -> None:
        pass

    def __enter__(self) -> TritonModelSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class HostStepLoop:
    """A step graph's loop with the state on the host: each step's carried outputs are the next step's inputs. A
    skipped step (step caching) is the reuse graph's arithmetic (ptdit.contract.reuse_graphs) in numpy."""

    def __init__(self, session: TritonModelSession, carry: Mapping[str, str]) -> None:
        self.session, self.carry = session, dict(carry)
        self.latent: np.ndarray | None = None
        self.index = np.zeros(1, dtype=np.int64)  # the step index the next step reads
        self.tables: ReuseTables | None = None
        self.velocities: list[np.ndarray] = []
        self.computed = 0

    def start(self, feeds: Mapping[str, np.ndarray], reuse: ReuseTables | None = None) -> None:
        self.session.set_inputs(feeds)
        self.latent = np.asarray(feeds["latent"])
        self.index = np.asarray(feeds["step"], dtype=np.int64)
        self.tables, self.computed = reuse, 0
        self.velocities = [np.zeros_like(self.latent, dtype=np.float32) for _ in range(2)]

    def step(self, index: int) -> None:
        before, at = self.latent, int(self.index[0])
        outputs = self.session.run()
        self.session.set_inputs({name: outputs[out] for name, out in self.carry.items()})
        self.latent, self.index = outputs[self.carry["latent"]], outputs[self.carry["step"]]
        if self.tables is not None and before is not None:
            self.velocities[self.computed % 2] = (self.latent - before) * self.tables.inverse_dt[at]
            self.computed += 1

    def skip(self, index: int) -> None:
        if self.tables is None or not self.computed or self.latent is None:
            raise Failure("a skipped step needs the loop started with reuse tables and a computed step first")
        at = int(self.index[0])
        along_a = self.velocities[(self.computed - 1) % 2] * self.tables.weight_a[at]
        along_b = self.velocities[self.computed % 2] * self.tables.weight_b[at]
        self.latent = self.latent + (along_a + along_b)
        self.index = self.index + 1
        self.session.set_inputs({"latent": self.latent, "step": self.index})

    def finish(self) -> np.ndarray:
        assert self.latent is not None, "start() first"
        return self.latent

    def close(self) -> None:
        pass

    def __enter__(self) -> HostStepLoop:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

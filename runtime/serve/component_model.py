"""One component of a served pipeline (the text encoder, the transformer, a VAE decoder tile) as a Triton model of
its own, for the `components` layout on ONNX Runtime: Triton's Python backend runs this file as its 1/model.py,
with the component's .onnx and manifest next to it (the config's parameter `artifact` names the .onnx). With
TensorRT the components are tensorrt_plan models instead, which Triton runs itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils  # Triton's Python backend provides it


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import runtime.backends.onnxruntime_session as onnxruntime_session
        from runtime.session import open_session

        onnxruntime_session.SPIN_IDLE_THREADS = False  # this process shares the CPU with Triton's own threads

        parameters = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        artifact = Path(args["model_repository"]) / args["model_version"] / parameters["artifact"]
        self.session = open_session(str(artifact), "onnxruntime", parameters["device"])
        self.inputs = [t.name for t in self.session.artifact.inputs]

    def execute(self, requests: list[Any]) -> list[Any]:
        answers = []
        for request in requests:
            try:
                self.session.set_inputs({name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                                         for name in self.inputs})
                outputs = self.session.run()
                answers.append(pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outputs.items()]))
            except Exception as e:  # the instance stays up for the next request
                answers.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(e).__name__}: {e}")))
        return answers

    def finalize(self) -> None:
        self.session.close()

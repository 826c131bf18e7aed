"""One component of a served pipeline (the text encoder, the transformer, a VAE decoder tile) as a Triton model of
its own, for the `components` layout on ONNX Runtime: Triton's Python backend runs this file as its 1/model.py,
with the component's .onnx and manifest next to it (the config's parameter `artifact` names the .onnx). With
TensorRT the components are tensorrt_plan models instead, which Triton runs itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils  # Triton's Python backend provides it


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        from runtime.backends.interface import Session
        from runtime.serve.instance import prepare_instance
        from runtime.session import open_session

        self.session: Session | None = None
        parameters = prepare_instance(args)
        artifact = Path(args["model_repository"]) / args["model_version"] / parameters["artifact"]
        self.session = open_session(str(artifact), "onnxruntime", parameters["device"])
        self.inputs = [t.name for t in self.session.artifact.inputs]

    def execute(self, requests: list[Any]) -> list[Any]:
        answers = []
        for request in requests:
            try:
                assert self.session is not None  # initialize made it
                self.session.set_inputs({name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                                         for name in self.inputs})
                outputs = self.session.run()
                answers.append(pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outputs.items()]))
            except Exception as e:  # the instance stays up for the next request
                answers.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(e).__name__}: {e}")))
        return answers

    def finalize(self) -> None:
        if self.session is not None:  # None: initialize failed
            self.session.close()

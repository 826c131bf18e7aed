"""The `ptdit` model of a repository written by ptdit-serve repository (this file is its 1/model.py): Triton's
Python backend runs it, and it runs the project's own runtime, PTDiTPipeline, on the pipeline folder next to it:
its sessions in this process (the pipeline layout), or sessions that call the component models of the same
server (the components layout: runtime/serve/bls_session.py).

One instance is one process holding one pipeline (the folder's sessions, opened once); Triton queues requests
per instance (the config's queue policy rejects what does not fit) and hands them over one execute() at a time.
A bad request gets an error answer and the instance serves the next one; a failure of the run does too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # Triton's Python backend provides it

from ptdit.contract.errors import InputError
from runtime.serve.protocol import CALLS, IMAGE, INPUTS, TIMINGS, VIDEO, parse_request


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        from runtime.pipeline.ptdit_pipeline import PTDiTPipeline
        from runtime.serve.instance import prepare_instance

        self.pipe: PTDiTPipeline | None = None
        parameters = prepare_instance(args)
        folder = Path(args["model_repository"]) / args["model_version"] / "pipeline"
        if parameters["layout"] == "pipeline":
            self.pipe = PTDiTPipeline.from_folder(folder, parameters["backend"], parameters["device"])
            return
        from runtime.pipeline.folder import load_pipeline
        from runtime.pipeline.text_to_image import PipelineComponents
        from runtime.serve.bls_session import TritonModelSession, manifest_artifact

        models = json.loads(parameters["components"])  # file name in pipeline.json -> [model, artifact]

        def open_component(name: str) -> TritonModelSession:
            model, artifact = models[name]
            return TritonModelSession(model, manifest_artifact(folder / artifact))

        # The graphs are in their own models (each checks its files); here only their manifests and the rest.
        self.pipe = PTDiTPipeline.from_components(PipelineComponents(load_pipeline(folder, verify=False),
                                                                     open_component=open_component))

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._answer(request) for request in requests]

    def _answer(self, request: Any) -> Any:
        try:
            values = {}
            for spec in INPUTS:
                tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
                if tensor is not None:
                    values[spec.name] = tensor.as_numpy()
            asked = parse_request(values)
            assert self.pipe is not None  # initialize made it
            out = self.pipe(asked.prompt, asked.negative_prompt, asked.steps, asked.guidance_scale, asked.seed,
                            output_type="pil", height=asked.height, width=asked.width,
                            use_resolution_binning=asked.use_resolution_binning, cache=asked.cache)
            if out.frames is not None:  # a video folder: its clip
                assert isinstance(out.frames, list)  # output_type "pil"
                frames = np.stack([np.asarray(frame, dtype=np.uint8) for frame in out.frames[0]])
                tensors = [pb_utils.Tensor(VIDEO.name, frames)]
            else:
                assert isinstance(out.images, list)
                tensors = [pb_utils.Tensor(IMAGE.name, np.asarray(out.images[0], dtype=np.uint8))]
            tensors += [pb_utils.Tensor(f"{stage}_seconds", np.array([out.timings[stage]], np.float32))
                        for stage in TIMINGS]
            tensors.append(pb_utils.Tensor(CALLS.name, np.array([out.transformer_calls], np.int32)))
            return pb_utils.InferenceResponse(output_tensors=tensors)
        except InputError as e:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG))
        except Exception as e:  # the instance stays up for the next request
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(e).__name__}: {e}"))

    def finalize(self) -> None:
        if self.pipe is not None:  # None: initialize failed
            self.pipe.close()

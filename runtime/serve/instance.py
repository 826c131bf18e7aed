"""What every model of a served repository does first: Triton's Python backend gives each instance a process of
its own, so what is set here is set for that instance alone."""

from __future__ import annotations

import json
import os
from typing import Any


def prepare_instance(args: dict[str, Any]) -> dict[str, str]:
    """The model's config parameters. A GPU instance sees only its own GPU (Triton places one on each: the
    instance group); ONNX Runtime's idle threads sleep, since the process shares the CPU with Triton's own."""
    if args.get("model_instance_kind") == "GPU":  # before anything in this process touches CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args["model_instance_device_id"])
    from ..backends import onnxruntime_session

    onnxruntime_session.SPIN_IDLE_THREADS = False
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}

"""The Python face raises what it promises: every public call (PTDiTPipeline, export_model, export_pipeline,
build_engine, PipelineClient) checks its arguments before any work and raises InputError naming the parameter,
and a closed object refuses every call."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pytest

from engines import build_engine
from export import export_model, export_pipeline
from ptdit.contract.arguments import checked, conforms, describe
from ptdit.contract.errors import InputError
from runtime import PTDiTPipeline
from runtime.serve.client import PipelineClient


def refused(call: Callable[[], Any], parameter: str, what: str = "") -> str:
    with pytest.raises(InputError) as error:
        call()
    message = str(error.value)
    assert message.startswith(f"{parameter} must be {what}") or message.startswith(parameter), message
    return message


def test_the_checker_reads_the_annotations():
    @checked
    def f(a: int, b: float = 1.0, c: str | Sequence[str] = "x", d: Path | str | None = None,
          e: Callable[[int], None] | None = None, g: tuple[int, int] = (1, 2), h: np.ndarray | None = None) -> None:
        pass

    f(1, 2, ["a"], Path("p"), print, (3, 4), [[1.0]])
    f(np.int64(3), np.float32(0.5), "y", "p", None, [5, 6], np.zeros(2))
    for args, name, text in [((True,), "a", "an integer, got bool True"), ((1, "2"), "b", "a number, got str '2'"),
                             ((1, 2, [3]), "c", "a string or a list of strings, got list [3]"),
                             ((1, 2, "x", 4), "d", "a path or a string or None, got int 4"),
                             ((1, 2, "x", None, 5), "e", "a callable or None, got int 5"),
                             ((1, 2, "x", None, None, (1,)), "g", "2 values (an integer, an integer), got tuple (1,)"),
                             ((1, 2, "x", None, None, (1, 2), 7), "h", "an array or None, got int 7")]:
        assert refused(lambda args=args: f(*args), name) == f"{name} must be {text}"
    assert conforms("fp16", Any) and describe(int | None) == "an integer or None"
    assert conforms(np.True_, bool) and not conforms(np.int64(1), bool)


def test_names_only_type_checkers_see_are_matched_by_name():
    """An annotation naming a class imported for type checkers only (dotted too) is matched by class name, so the
    check imports nothing heavy and never fails on the name itself."""
    namespace: dict[str, Any] = {}
    exec("from __future__ import annotations\n"
         "def f(model: onnx_ir.Model | None = None, cfg: PTDiTConfig | str = 'x') -> None:\n    pass\n", namespace)
    f = checked(namespace["f"])

    class PTDiTConfig:
        pass

    class Model:
        pass

    f(Model(), PTDiTConfig())
    f(None, "tiny")
    assert refused(lambda: f(3), "model") == "model must be a Model or None, got int 3"


@pytest.fixture(scope="module")
def transformer(tmp_path_factory) -> Path:
    return export_model(256, preset="tiny", checks="none", out_dir=tmp_path_factory.mktemp("arguments"))[0].path


@pytest.fixture(scope="module")
def pipe(pipelines):
    with PTDiTPipeline.from_folder(pipelines[256], "onnxruntime", "cpu") as opened:
        yield opened


@pytest.mark.parametrize("arguments,parameter", [
    (dict(prompt=123), "prompt"),
    (dict(prompt=["a fox", 7]), "prompt"),
    (dict(prompt="a fox", negative_prompt=7), "negative_prompt"),
    (dict(prompt="a fox", callback_on_step_end="print"), "callback_on_step_end"),
    (dict(prompt="a fox", on_tile=1), "on_tile"),
    (dict(prompt="a fox", num_inference_steps="30"), "num_inference_steps"),
    (dict(prompt="a fox", num_inference_steps=10 ** 12), "num_inference_steps"),
    (dict(prompt="a fox", guidance_scale="4"), "guidance_scale"),
    (dict(prompt="a fox", seed=1.5), "seed"),
    (dict(prompt="a fox", num_images_per_prompt=True), "num_images_per_prompt"),
    (dict(prompt="a fox", output_type="png"), "output_type"),
    (dict(prompt="a fox", shift="1"), "shift"),
    (dict(prompt_embeds=5), "prompt_embeds"),
])
def test_a_pipeline_refuses_wrong_arguments_before_any_work(pipe, monkeypatch, arguments, parameter):
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the work began before the arguments were checked")

    monkeypatch.setattr(pipe.components, "encode", no_work)
    monkeypatch.setattr(pipe.transformer, "set_inputs", no_work)
    refused(lambda: pipe(**arguments), parameter)


def test_a_closed_pipeline_refuses_every_call(pipelines, transformer):
    pipe = PTDiTPipeline.from_folder(pipelines[256], "onnxruntime", "cpu")
    pipe.close()
    pipe.close()  # a second close does nothing
    for call in (lambda: pipe("a fox"), lambda: pipe.encode_prompt("a fox")):
        with pytest.raises(InputError, match=r"this PTDiTPipeline is closed: (__call__|encode_prompt)\(\) is refused "
                                             r"after close\(\); make a new one"):
            call()
    alone = PTDiTPipeline.from_artifact(transformer, "onnxruntime", "cpu")  # a transformer artifact alone
    features = np.zeros((1, 200, 4096), np.float32)
    assert alone(prompt_embeds=features, num_inference_steps=1).latents.shape == (1, 4, 32, 32)
    alone.close()
    with pytest.raises(InputError, match="this PTDiTPipeline is closed"):
        alone(prompt_embeds=features, num_inference_steps=1)


def test_the_pipeline_constructors_check_their_arguments(pipelines, transformer):
    refused(lambda: PTDiTPipeline.from_folder(42), "folder", "a string or a path")
    refused(lambda: PTDiTPipeline.from_folder(pipelines[256], verify="yes"), "verify", "True or False")
    refused(lambda: PTDiTPipeline.from_artifact(transformer, weight_budget=1.5), "weight_budget", "an integer")


@pytest.mark.parametrize("call,parameter", [
    (lambda out: export_model("256", preset="tiny", out_dir=out), "resolution"),
    (lambda out: export_model(256, preset="tiny", out_dir=out, force="yes"), "force"),
    (lambda out: export_model(256, preset="tiny", out_dir=out, batch=2.0), "batch"),
    (lambda out: export_model(256, preset="tiny", out_dir=out, progress="log"), "progress"),
    (lambda out: export_model(256, preset=7, out_dir=out), "preset"),
    (lambda out: export_model(256, config=7, out_dir=out), "config"),
    (lambda out: export_pipeline(256, preset="tiny", out_dir=out, vae=3), "vae"),
    (lambda out: export_pipeline(256, preset="tiny", out_dir=out, frames="8"), "frames"),
    (lambda out: build_engine(3, out_dir=out), "onnx"),
    (lambda out: build_engine("x.onnx", out_dir=out, compute_capabilities=[8.9]), "compute_capabilities"),
    (lambda out: build_engine("x.onnx", out_dir=out, opt_level="3"), "opt_level"),
])
def test_export_and_build_refuse_wrong_types_before_any_work(tmp_path, call, parameter):
    out = tmp_path / "out"
    refused(lambda: call(out), parameter)
    assert not out.exists()


def test_the_client_checks_its_arguments_before_anything_is_sent_and_refuses_after_close():
    class NoServer:
        """What the client would send to: nothing may reach it."""

        closes = 0

        def infer(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("a request was sent")

        def close(self) -> None:
            NoServer.closes += 1

    refused(lambda: PipelineClient(8001), "url", "a string")
    client = PipelineClient.__new__(PipelineClient)  # connected, as far as these checks go
    client.url, client.closed, client._client = "localhost:1", False, NoServer()
    for arguments, parameter in [(dict(prompt=5), "prompt"),
                                 (dict(prompt="x", negative_prompt=b"x"), "negative_prompt"),
                                 (dict(prompt="x", steps=10 ** 12), "steps"), (dict(prompt="x", seed=-1), "seed"),
                                 (dict(prompt="x", guidance_scale=float("nan")), "guidance_scale"),
                                 (dict(prompt="x", timeout_s=0), "timeout_s")]:
        refused(lambda arguments=arguments: client.generate(**arguments), parameter)
    client.close()
    client.close()
    assert NoServer.closes == 1
    with pytest.raises(InputError, match=r"this PipelineClient is closed: generate\(\) is refused after close\(\)"):
        client.generate("a fox")

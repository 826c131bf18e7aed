"""ptdit-serve: the prompt-to-image pipeline on NVIDIA Triton Inference Server."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import click

from ptdit.contract.cli_types import Console, Number, console_options, version_option
from ptdit.contract.commands import exit_codes
from ptdit.contract.errors import Failure, InputError
from ptdit.contract.numbers import INSTANCES, Range

from ..pipeline.folder import check_pipeline_path
from ..serve import protocol
from ..serve.client import TIMEOUT_S
from ..serve.environment import default_env_dir, find_server, setup
from ..serve.kubernetes import DEFAULT_IMAGE, QUEUE_TARGET_MS, REPLICAS, ClusterOptions, write_kubernetes
from ..serve.openai_front import Front
from ..serve.repository import QUEUE, QUEUE_TIMEOUT_S, ServeOptions, write_repository
from ..serve.server import LocalServer, Ports

EXAMPLES = """\b
Examples:
  ptdit-serve setup                          (once: the server and its Python, ~/.cache/ptdit)
  ptdit-serve run artifacts/ptdit-tiny-256-pipeline             (serve a pipeline folder; Ctrl-C stops)
  ptdit-run --server localhost:8001 --prompt "a red fox" --out fox.png
  ptdit-serve repository artifacts/ptdit-xl-1024-pipeline --backend tensorrt --device cuda --out models/
  ptdit-serve run models/ --http-port 9000 --grpc-port 9001 --metrics-port 9002
  ptdit-serve run artifacts/ptdit-tiny-256-pipeline --openai-port 8080     (and the OpenAI API on :8080/v1)
  ptdit-serve front --server localhost:8001 --port 8080        (the OpenAI API for a server already running)
  ptdit-serve kubernetes artifacts/ptdit-xl-1024-pipeline --backend tensorrt --device cuda --replicas 2 --out k8s/
"""

ENV_OPTION = click.option("--env", "env_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                          help="The server environment of ptdit-serve setup [default: $PTDIT_SERVE_ENV or "
                               "~/.cache/ptdit/tritonserver-pyX.Y-<hash of this checkout>].")


SERVE_OPTION_NAMES = ("backend", "device", "layout", "instances", "max_queue_size", "queue_timeout_s")
EXIT_TIMEOUT_S = Range(0, 3600, integer=True)  # seconds; tritonserver takes whole seconds
HOST_OPTION = click.option("--host", default="127.0.0.1", show_default=True,
                           help="Address to listen on (0.0.0.0: every one).")
EXIT_TIMEOUT_OPTION = click.option(
    "--exit-timeout", "exit_timeout_s", type=Number(EXIT_TIMEOUT_S), default=60, show_default=True,
    help="On Ctrl-C / SIGTERM, seconds the in-flight requests get to finish.")
REQUEST_TIMEOUT_OPTION = click.option(
    "--request-timeout", "request_timeout_s", type=Number(TIMEOUT_S), default=600, show_default=True,
    help="OpenAI front: seconds Triton has for one image before the front answers 504.")


def serve_options(command: click.Command) -> click.Command:
    """How the repository serves the folder: the same on `repository` and on `run FOLDER`."""
    for decorator in reversed([
        click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime",
                     show_default=True, help="What runs the components: tensorrt takes the plans ptdit-build made "
                                             "in the folder."),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                     help="cuda: the instances are placed on every GPU of the node."),
        click.option("--layout", type=click.Choice(["pipeline", "components"]), default=None,
                     help="pipeline: one model runs it all; components: each component a Triton model of its own "
                          "[default: components for tensorrt, pipeline for onnxruntime]."),
        click.option("--instances", type=Number(INSTANCES), default=1, show_default=True,
                     help="Copies of the pipeline per device (CPU: processes; GPU: per GPU)."),
        click.option("--max-queue-size", type=Number(QUEUE), default=16, show_default=True,
                     help="Requests waiting beyond the running ones; more are rejected (UNAVAILABLE)."),
        click.option("--queue-timeout", "queue_timeout_s", type=Number(QUEUE_TIMEOUT_S), default=0,
                     show_default=True, help="Seconds a request may wait in the queue before it is rejected "
                                             "(0: no limit)."),
    ]):
        command = decorator(command)
    return command


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@version_option
def main() -> None:
    """Serve a pipeline folder (ptdit-export --pipeline) on NVIDIA Triton Inference Server: a model `ptdit` that
    takes prompt, negative_prompt, seed, steps and guidance_scale and answers the image (uint8 [H, W, 3]; a video
    folder's: its frames) and the encode, sample and decode seconds. In front of it, the OpenAI images and videos
    API (run --openai-port, front); on a cluster, Kubernetes manifests of both (kubernetes)."""


@main.command("setup")
@ENV_OPTION
@click.option("--force", is_flag=True, help="Remake the environment.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@console_options
def setup_command(env_dir: Path | None, force: bool, debug: bool, console: Console) -> None:
    """Make the server environment: a virtual environment of this Python with numpy 1.26 (the Python backend
    of the wheel's server needs numpy < 2) and the tritonserver of the nvidia-pytriton wheel; it sees this
    environment's packages. Reused when it is there."""
    with exit_codes("ptdit-serve setup", debug):
        server = setup(env_dir or default_env_dir(), console.line, force)
    click.echo(f"tritonserver: {server.binary}")


@main.command("repository")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The model repository to write.")
@serve_options
@click.option("--force", is_flag=True, help="Overwrite --out.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@console_options
def repository_command(folder: Path, out_dir: Path, backend: str, device: str, layout: str | None, instances: int,
                       max_queue_size: int, queue_timeout_s: float, force: bool, as_json: bool, debug: bool,
                       console: Console) -> None:
    """Write a Triton model repository for FOLDER, a pipeline folder: what `tritonserver --model-repository`
    (or NVIDIA's container) serves."""
    options = ServeOptions(backend, device, instances, max_queue_size, queue_timeout_s, layout)
    with exit_codes("ptdit-serve repository", debug):
        write_repository(folder, out_dir, options, force)
    models = sorted(p.name for p in out_dir.iterdir() if (p / "config.pbtxt").exists())
    summary = {"repository": str(out_dir), "models": models, **options.__dict__, "layout": options.chosen_layout}
    click.echo(json.dumps(summary, indent=2) if as_json else
               f"wrote {out_dir}: {', '.join(models)} ({options.chosen_layout} layout, {backend} on {device}, "
               f"{instances} per device, queue {max_queue_size})")


@main.command("run")
@click.argument("source", metavar="FOLDER", type=click.Path(exists=True, path_type=Path))
@HOST_OPTION
@click.option("--http-port", type=Number(Ports.RANGE), default=8000, show_default=True, help="HTTP/REST port.")
@click.option("--grpc-port", type=Number(Ports.RANGE), default=8001, show_default=True,
              help="gRPC port (ptdit-run --server HOST:PORT).")
@click.option("--metrics-port", type=Number(Ports.RANGE), default=8002, show_default=True,
              help="Prometheus metrics port (/metrics).")
@serve_options
@ENV_OPTION
@click.option("--tritonserver", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="This tritonserver binary [default: the one of ptdit-serve setup, else one on PATH].")
@click.option("--openai-port", type=Number(Ports.RANGE), default=None,
              help="Also serve the OpenAI API (/v1/images/generations, or /v1/videos for a video folder; "
                   "/v1/models) on this port, in front of the server.")
@REQUEST_TIMEOUT_OPTION
@EXIT_TIMEOUT_OPTION
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@console_options
def run_command(source: Path, host: str, http_port: int, grpc_port: int, metrics_port: int, backend: str,
                device: str, layout: str | None, instances: int, max_queue_size: int, queue_timeout_s: float,
                env_dir: Path | None, tritonserver: Path | None, openai_port: int | None, request_timeout_s: float,
                exit_timeout_s: int, debug: bool, console: Console) -> None:
    """Start tritonserver on FOLDER: a pipeline folder (its repository is written to a temporary folder, with
    the serving options below) or a repository of ptdit-serve repository. Prints the addresses and serves until
    Ctrl-C or SIGTERM, which let the requests in flight finish."""
    with exit_codes("ptdit-serve run", debug, writes=False):
        ports = Ports(http_port, grpc_port, metrics_port)  # three different ports, before any work
        if openai_port is not None and openai_port in (http_port, grpc_port, metrics_port):
            raise InputError(f"--openai-port {openai_port} is one of the server's ports: pass another")
        check_pipeline_path(source)  # a file (an ONNX) is refused in the project's words, not click's
        server = find_server(env_dir, tritonserver)
        scratch = None
        try:
            if (source / protocol.MODEL / "config.pbtxt").exists():
                context = click.get_current_context()
                given = [param.opts[0] for param in context.command.params if param.name in SERVE_OPTION_NAMES
                         and context.get_parameter_source(param.name) != click.core.ParameterSource.DEFAULT]
                if given:
                    raise InputError(f"{source} is a repository, whose config says how it serves: drop "
                                     f"{', '.join(given)}, or rewrite it with ptdit-serve repository")
                repository = source
            else:
                scratch = Path(tempfile.mkdtemp(prefix="ptdit-serve-"))
                repository = write_repository(source, scratch / "repository",
                                              ServeOptions(backend, device, instances, max_queue_size,
                                                           queue_timeout_s, layout), symlinks=True)
            local = LocalServer(server, repository, ports, host, exit_timeout_s)
            console.line(f"ptdit-serve: starting {server.binary} ({server.source}) on {repository}")
            front = None
            with local:
                if openai_port is not None:
                    front = Front(local.grpc_url, request_timeout_s).start(host, openai_port, exit_timeout_s)
                click.echo(f"serving {protocol.MODEL}: http {local.http_url}  grpc {local.grpc_url}  metrics "
                           f"{local.metrics_url}" + (f"  openai {front.url}/v1" if front else "") + "  (Ctrl-C stops)")
                try:
                    code: int | None = local.wait()
                except KeyboardInterrupt:
                    console.line("ptdit-serve: stopping (in-flight requests finish first)")
                    if front is not None:  # first: its requests in flight still need the server
                        front.stop(exit_timeout_s)
                    code = local.stop()
                    console.line(f"ptdit-serve: stopped (tritonserver exit code {code})")
                    return
                finally:
                    if front is not None:
                        front.stop(exit_timeout_s)
                local.log_reported = True  # the error names it: stop() keeps it
                raise Failure(f"tritonserver exited on its own with code {code} (its log: {local.log})")
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)


@main.command("kubernetes")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The folder to write: the manifests, the Dockerfile and the model repository.")
@click.option("--replicas", type=Number(REPLICAS), default=1, show_default=True,
              help="Pods to start with, one GPU each (with --device cuda); the autoscaler's floor.")
@click.option("--max-replicas", type=Number(REPLICAS), default=4, show_default=True,
              help="The autoscaler's ceiling.")
@click.option("--image", default=DEFAULT_IMAGE, show_default=True,
              help="The pods' image, as the cluster pulls it (build it with the Dockerfile written to --out).")
@click.option("--store", default="pvc:ptdit-models", show_default=True,
              help="Where the pods read the repository: pvc:CLAIM (a volume claim holding it at its root), or an "
                   "s3://, gs:// or as:// address tritonserver reads.")
@click.option("--credentials-secret", default=None,
              help="A Secret whose keys are the object store's environment variables (AWS_ACCESS_KEY_ID, ...).")
@click.option("--queue-target-ms", "queue_target_ms", type=Number(QUEUE_TARGET_MS), default=500, show_default=True,
              help="Average milliseconds a request waits in a pod's queue above which the autoscaler adds pods.")
@serve_options
@REQUEST_TIMEOUT_OPTION
@EXIT_TIMEOUT_OPTION
@click.option("--force", is_flag=True, help="Overwrite --out.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@console_options
def kubernetes_command(folder: Path, out_dir: Path, replicas: int, max_replicas: int, image: str, store: str,
                       credentials_secret: str | None, queue_target_ms: float, backend: str, device: str,
                       layout: str | None, instances: int, max_queue_size: int, queue_timeout_s: float,
                       request_timeout_s: float, exit_timeout_s: int, force: bool, debug: bool,
                       console: Console) -> None:
    """Write plain Kubernetes manifests that serve FOLDER, a pipeline folder: a Deployment of REPLICAS pods (each
    tritonserver on one GPU with the OpenAI front beside it, probed on their health endpoints, drained on
    termination), a Service, a HorizontalPodAutoscaler on Triton's queue time (through the Prometheus adapter
    rule it writes), a PodDisruptionBudget, the Dockerfile of the image and the model repository to put on the
    store. Nothing is applied: kubectl apply -f OUT does (docs/serving.md)."""
    options = ClusterOptions(replicas, max_replicas, image, store, credentials_secret, queue_target_ms,
                             exit_timeout_s, request_timeout_s)
    with exit_codes("ptdit-serve kubernetes", debug):
        made = write_kubernetes(folder, out_dir, options,
                                ServeOptions(backend, device, instances, max_queue_size, queue_timeout_s, layout),
                                force)
    click.echo(f"wrote {out_dir}: {', '.join(made)}, Dockerfile, repository/")
    where = f"the volume of claim {store[4:]}" if store.startswith("pvc:") else store
    console.line(f"next: copy {out_dir / 'repository'} to the root of {where}; build and push {image} with "
                 f"{out_dir / 'Dockerfile'}; add adapter-rules.yaml's rule to your Prometheus adapter; "
                 f"kubectl apply -f {out_dir}")


@main.command("front")
@click.option("--server", "server_url", default="localhost:8001", show_default=True,
              help="The gRPC address of the Triton server to forward to (HOST:PORT).")
@HOST_OPTION
@click.option("--port", "openai_port", type=Number(Ports.RANGE), default=8080, show_default=True,
              help="Port of the OpenAI API.")
@REQUEST_TIMEOUT_OPTION
@EXIT_TIMEOUT_OPTION
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@console_options
def front_command(server_url: str, host: str, openai_port: int, request_timeout_s: float, exit_timeout_s: int,
                  debug: bool, console: Console) -> None:
    """The OpenAI API (/v1/images/generations or /v1/videos, /v1/models, /health/ready) in front of a Triton server
    that serves a pipeline (ptdit-serve run, or a pod of ptdit-serve kubernetes): each image is forwarded to
    it over gRPC. Serves until Ctrl-C or SIGTERM, which let the requests in flight finish."""
    with exit_codes("ptdit-serve front", debug, writes=False, flags={"openai_port": "--port",
                                                                      "server_url": "--server"}):
        front = Front(server_url, request_timeout_s).start(host, openai_port, exit_timeout_s)
        click.echo(f"serving the OpenAI API of {server_url}: {front.url}/v1  (Ctrl-C stops)")
        try:
            front.wait()
        except KeyboardInterrupt:
            console.line("ptdit-serve: stopping (in-flight requests finish first)")
            front.stop(exit_timeout_s)
            console.line("ptdit-serve: stopped")
            return
        finally:
            front.stop(exit_timeout_s)
        raise Failure("the OpenAI front stopped on its own (its error is above)")


if __name__ == "__main__":
    main()

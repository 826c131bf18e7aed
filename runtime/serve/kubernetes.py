"""Kubernetes manifests for a served pipeline (ptdit-serve kubernetes): plain YAML for `kubectl apply -f`, written
next to the model repository they serve. Nothing here talks to a cluster.

    OUT/repository/            the model repository (ptdit-serve repository's): put it on the volume or bucket
    OUT/deployment.yaml        N pods, each one GPU: tritonserver on the repository, the OpenAI front beside it
    OUT/service.yaml           a Service: OpenAI (8080), Triton HTTP (8000), gRPC (8001), metrics (8002); and
                               ptdit-videos, the OpenAI port keeping a client on one pod (its video jobs live there)
    OUT/autoscaler.yaml        a HorizontalPodAutoscaler on the pods' average queue time per request
    OUT/adapter-rules.yaml     the Prometheus adapter rule that makes that metric of Triton's counters
    OUT/disruption-budget.yaml a node drain takes one pod at a time
    OUT/Dockerfile             the image: NVIDIA's tritonserver container with this package installed

Termination: Kubernetes sends SIGTERM to both containers after their preStop hooks. The front's hook waits for
the Service to stop sending it requests; then it stops listening and finishes its requests in flight, which
Triton still serves: Triton's hook is longer, and Triton in turn finishes what it has before it exits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptdit.contract.errors import InputError, option
from ptdit.contract.numbers import Range
from ptdit.contract.outputs import Outputs

from . import protocol
from .repository import ServeOptions, write_repository

NAME = "ptdit"
PORTS = {"openai": 8080, "http": 8000, "grpc": 8001, "metrics": 8002}
REPLICAS = Range(1, 1000, integer=True)
QUEUE_TARGET_MS = Range(0, 3_600_000, low_open=True)
FRONT_DRAIN_S = 5  # the front's preStop: time for the Service's endpoints to drop the pod
TRITON_DRAIN_S = 10  # longer: the front's requests in flight reach Triton before it stops taking new ones
METRIC = "ptdit_queue_ms_per_request"  # what the adapter rule serves to the autoscaler, per pod
STORES = re.compile(r"^(s3|gs|as)://\S+$")
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
DEFAULT_IMAGE = "ptdit-serve:0.1.0"
PACKAGES = ("ptdit", "export", "engines", "runtime", "bench")  # setup.cfg's packages
NAMES = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # a Secret's name, as Kubernetes takes it


@dataclass(frozen=True)
class ClusterOptions:
    """replicas: pods to start with (and the autoscaler's floor); max_replicas: its ceiling; image: the image the
    Dockerfile builds, in the cluster's registry; store: where the repository is: pvc:CLAIM (a volume claim
    that holds it at its root) or s3:// gs:// as:// (read by tritonserver itself; credentials: a Secret whose
    keys are the store's environment variables); queue_target_ms: the average queue time per request above
    which the autoscaler adds pods."""

    replicas: int = 1
    max_replicas: int = 4
    image: str = DEFAULT_IMAGE
    store: str = "pvc:ptdit-models"
    credentials_secret: str | None = None
    queue_target_ms: float = 500.0
    exit_timeout_s: int = 60
    request_timeout_s: float = 600.0

    def check(self) -> None:
        REPLICAS.check(option("replicas"), self.replicas)
        REPLICAS.check(option("max_replicas"), self.max_replicas)
        if self.max_replicas < self.replicas:
            raise InputError(f"{option('max_replicas')} {self.max_replicas} is below {option('replicas')} "
                             f"{self.replicas}: the autoscaler's ceiling is at least its floor")
        QUEUE_TARGET_MS.check(option("queue_target_ms"), self.queue_target_ms)
        if not (self.store.startswith("pvc:") and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", self.store[4:])
                or STORES.match(self.store)):
            raise InputError(f"{option('store')} takes pvc:CLAIM (a PersistentVolumeClaim's name) or an s3://, "
                             f"gs:// or as:// address of the repository, got {self.store!r}")
        if self.credentials_secret is not None and not NAMES.fullmatch(self.credentials_secret):
            raise InputError(f"{option('credentials_secret')} takes a Secret's name (lower-case letters, digits and "
                             f"-), got {self.credentials_secret!r}")
        if self.credentials_secret is not None and self.store.startswith("pvc:"):
            raise InputError(f"{option('credentials_secret')} is for an object store: drop it, or pass "
                             f"{option('store')} s3://...")
        if not self.image or any(c.isspace() for c in self.image):
            raise InputError(f"{option('image')} takes an image reference (registry/name:tag), got {self.image!r}")


def label_value(name: str) -> str:
    """A folder's name as a label's value may be: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends (a folder
    of several sizes is named with a +)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:63].strip("-_.") or NAME


def _probe(path: str, port: str, period_s: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period_s, "failureThreshold": failures,
            "timeoutSeconds": 5}


def _sleep(seconds: int) -> dict[str, Any]:
    return {"preStop": {"exec": {"command": ["sleep", str(seconds)]}}}


def deployment(options: ClusterOptions, serve: ServeOptions, pipeline: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/instance": label_value(pipeline)}
    selector = {"app.kubernetes.io/name": NAME}  # immutable once applied: a folder applied after another replaces it
    on_volume = options.store.startswith("pvc:")
    repository = "/models" if on_volume else options.store
    triton: dict[str, Any] = {
        "name": "triton", "image": options.image, "imagePullPolicy": "IfNotPresent",
        "command": ["tritonserver", f"--model-repository={repository}", f"--http-port={PORTS['http']}",
                    f"--grpc-port={PORTS['grpc']}", f"--metrics-port={PORTS['metrics']}",
                    f"--exit-timeout-secs={options.exit_timeout_s}", "--disable-auto-complete-config"],
        "ports": [{"name": name, "containerPort": PORTS[name]} for name in ("http", "grpc", "metrics")],
        # Loading the models (and a TensorRT engine's deserialization) may take minutes: the startup probe
        # allows 20; liveness only starts after it.
        "startupProbe": _probe("/v2/health/ready", "http", 10, 120),
        "readinessProbe": _probe("/v2/health/ready", "http", 5, 3),
        "livenessProbe": _probe("/v2/health/live", "http", 10, 6),
        "lifecycle": _sleep(TRITON_DRAIN_S),
    }
    if serve.device == "cuda":
        triton["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    if on_volume:
        triton["volumeMounts"] = [{"name": "models", "mountPath": "/models", "readOnly": True}]
    if options.credentials_secret:
        triton["envFrom"] = [{"secretRef": {"name": options.credentials_secret}}]
    front = {
        "name": "openai", "image": options.image, "imagePullPolicy": "IfNotPresent",
        "command": ["ptdit-serve", "front", f"--server=localhost:{PORTS['grpc']}", "--host=0.0.0.0",
                    f"--port={PORTS['openai']}", f"--request-timeout={options.request_timeout_s:g}",
                    f"--exit-timeout={options.exit_timeout_s}"],
        "ports": [{"name": "openai", "containerPort": PORTS["openai"]}],
        "readinessProbe": _probe("/health/ready", "openai", 5, 3),
        "livenessProbe": _probe("/health/live", "openai", 10, 6),
        "lifecycle": _sleep(FRONT_DRAIN_S),
    }
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": TRITON_DRAIN_S + options.exit_timeout_s + 30,
        "containers": [triton, front],
    }
    if on_volume:
        pod["volumes"] = [{"name": "models", "persistentVolumeClaim": {"claimName": options.store[4:],
                                                                       "readOnly": True}}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "labels": labels},
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": selector},
            # A new pod is ready before an old one goes: a rollout never drops below the replicas serving.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(PORTS["metrics"]),
                    "prometheus.io/path": "/metrics"}},
                "spec": pod,
            },
        },
    }


def services(labels: dict[str, str]) -> list[dict[str, Any]]:
    """The Service of every port, and one of the OpenAI port alone that keeps a client on one pod: a video job lives
    in the memory of the pod's front that made it, so its polls must reach that pod (images need no such thing)."""
    selector = {"app.kubernetes.io/name": NAME}
    every = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME, "labels": labels},
             "spec": {"type": "ClusterIP", "selector": selector,
                      "ports": [{"name": name, "port": port, "targetPort": name} for name, port in PORTS.items()]}}
    videos = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{NAME}-videos", "labels": labels},
              "spec": {"type": "ClusterIP", "selector": selector, "sessionAffinity": "ClientIP",
                       "ports": [{"name": "openai", "port": PORTS["openai"], "targetPort": "openai"}]}}
    return [every, videos]


def autoscaler(options: ClusterOptions, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": NAME, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
            "minReplicas": options.replicas, "maxReplicas": options.max_replicas,
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": METRIC},
                "target": {"type": "AverageValue", "averageValue": f"{options.queue_target_ms:g}"}}}],
            # Pods are slow to start (a GPU, the models to load) and slow to drain: scale down calmly.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def adapter_rules(labels: dict[str, str]) -> dict[str, Any]:
    """The rule for the Prometheus adapter's config (its `rules:`): Triton's cumulative queue time and request
    count, as the average milliseconds a request of the last minute waited in each pod's queue."""
    model = f'model="{protocol.MODEL}"'  # the pipeline's own queue: not the component models' of its layout
    rule = (
        f"- seriesQuery: 'nv_inference_queue_duration_us{{namespace!=\"\",pod!=\"\",{model}}}'\n"
        "  resources:\n    overrides:\n      namespace: {resource: namespace}\n      pod: {resource: pod}\n"
        f"  name:\n    matches: nv_inference_queue_duration_us\n    as: {METRIC}\n"
        f"  metricsQuery: 'sum(rate(nv_inference_queue_duration_us{{<<.LabelMatchers>>,{model}}}[1m])) by "
        f"(<<.GroupBy>>) / 1000 / clamp_min(sum(rate(nv_inference_request_success{{<<.LabelMatchers>>,{model}}}[1m]))"
        " by (<<.GroupBy>>), 0.001)'\n")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{NAME}-adapter-rules", "labels": labels},
            "data": {"rules.yaml": rule}}


def disruption_budget(labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": NAME, "labels": labels},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}}}}


def dockerfile(serve: ServeOptions) -> str:
    extras = "serve,trt" if serve.backend == "tensorrt" else "serve"  # the pipeline layout runs plans in Python
    return (f"# The image of ptdit-serve kubernetes' pods: tritonserver, and this package for its Python backend\n"
            f"# and the OpenAI front. Build it from a checkout of this project (only the package is copied):\n"
            f"#   docker build -f OUT/Dockerfile -t REGISTRY/ptdit-serve:TAG .\n"
            f"FROM {TRITON_IMAGE}\n"
            "COPY setup.cfg pyproject.toml README.md /opt/ptdit/\n"
            + "".join(f"COPY {package} /opt/ptdit/{package}\n" for package in PACKAGES) +
            f'RUN python3 -m pip install --no-cache-dir "/opt/ptdit[{extras}]"\n')


def manifests(options: ClusterOptions, serve: ServeOptions, pipeline: str) -> dict[str, list[dict[str, Any]]]:
    """The objects to apply, by file name (a file of several: YAML documents one after the other)."""
    made = deployment(options, serve, pipeline)
    labels = made["metadata"]["labels"]
    return {"deployment.yaml": [made], "service.yaml": services(labels),
            "autoscaler.yaml": [autoscaler(options, labels)], "adapter-rules.yaml": [adapter_rules(labels)],
            "disruption-budget.yaml": [disruption_budget(labels)]}


def to_yaml(documents: list[dict[str, Any]]) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        """Every object written out (no &anchors for the labels the objects share), text of several lines as a
        block (the adapter's rule reads as it will be pasted)."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    def text(dumper: yaml.SafeDumper, data: str) -> Any:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)

    Dumper.add_representer(str, text)
    return str(yaml.dump_all(documents, Dumper=Dumper, sort_keys=False, width=120))


def write_kubernetes(folder: Path, out: Path, options: ClusterOptions, serve: ServeOptions,
                     force: bool = False) -> dict[str, list[dict[str, Any]]]:
    """OUT for the pipeline folder at `folder`; nothing is left at out if it fails."""
    options.check()
    serve.check()
    with Outputs(force) as outputs:
        staged = outputs.claim(out, folder=True)
        staged.mkdir(parents=True)
        write_repository(folder, staged / "repository", serve)
        made = manifests(options, serve, folder.resolve().name)
        for name, documents in made.items():
            (staged / name).write_text(to_yaml(documents))
        (staged / "Dockerfile").write_text(dockerfile(serve))
        outputs.commit()
    return made

"""ptdit-serve kubernetes: manifests validated offline against the Kubernetes API schemas (kubernetes-validate
carries them), and checked against what they start: the front's flags against the command, the probes against the
paths the servers answer, the autoscaler's metric against the adapter rule that makes it. No cluster is run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime.cli.serve import main as serve_main
from runtime.serve import kubernetes as k8s
from runtime.serve import protocol

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
FILES = ("deployment.yaml", "service.yaml", "autoscaler.yaml", "adapter-rules.yaml", "disruption-budget.yaml")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime.cli.serve", "kubernetes", *args], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def written(pipelines, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("k8s") / "out"
    done = cli(str(pipelines[256]), "--out", str(out), "--replicas", "2", "--max-replicas", "6", "--device", "cuda",
               "--image", "registry.example/ptdit-serve:1", "--exit-timeout", "45")
    assert done.returncode == 0, done.stderr
    assert "kubectl apply -f" in done.stderr
    return out


def load_all(out: Path, name: str) -> list[dict]:
    return list(yaml.safe_load_all((out / name).read_text()))


def load(out: Path, name: str) -> dict:
    return load_all(out, name)[0]


def test_every_manifest_is_valid_against_the_kubernetes_schemas(written):
    assert sorted(p.name for p in written.iterdir()) == sorted([*FILES, "Dockerfile", "repository"])
    kinds = []
    for name in FILES:
        for document in load_all(written, name):
            kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
            kinds.append(document["kind"])
    assert sorted(kinds) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service",
                             "Service"]


def test_an_invalid_object_is_refused_by_the_same_validation(written):
    """The check above can fail: the schemas refuse a manifest with a mistake in it."""
    deployment = load(written, "deployment.yaml")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)
    deployment = load(written, "deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_the_pods_run_triton_on_one_gpu_and_the_front_beside_it(written):
    deployment = load(written, "deployment.yaml")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    triton, front = pod["containers"]
    assert triton["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert "--model-repository=/models" in triton["command"] and "--exit-timeout-secs=45" in triton["command"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "ptdit-models"
    assert {p["httpGet"]["path"] for p in (triton["readinessProbe"], triton["startupProbe"])} == {"/v2/health/ready"}
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert front["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert front["image"] == triton["image"] == "registry.example/ptdit-serve:1"
    # the front's command line is one ptdit-serve front takes
    assert front["command"][:2] == ["ptdit-serve", "front"]
    context = serve_main.commands["front"].make_context("front", front["command"][2:])
    assert context.params["server_url"] == "localhost:8001" and context.params["exit_timeout_s"] == 45
    # drained in order: the front stops before Triton, both within the grace period
    front_drain = int(front["lifecycle"]["preStop"]["exec"]["command"][1])
    triton_drain = int(triton["lifecycle"]["preStop"]["exec"]["command"][1])
    assert front_drain < triton_drain and pod["terminationGracePeriodSeconds"] >= triton_drain + 45
    # the repository the pods serve is ptdit-serve repository's, for the GPU
    config = (written / "repository" / protocol.MODEL / "config.pbtxt").read_text()
    assert "KIND_GPU" in config and 'key: "sizes"' in config


def test_the_autoscaler_scales_on_the_metric_the_adapter_rule_makes(written):
    hpa = load(written, "autoscaler.yaml")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["scaleTargetRef"]["name"] == load(written, "deployment.yaml")["metadata"]["name"]
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rules = yaml.safe_load(load(written, "adapter-rules.yaml")["data"]["rules.yaml"])
    assert rules[0]["name"]["as"] == metric
    # the served pipeline's own queue and requests, not its component models' (the components layout's calls)
    assert rules[0]["metricsQuery"].count('<<.LabelMatchers>>,model="ptdit"}') == 2
    every, videos = load_all(written, "service.yaml")
    assert {p["name"]: p["port"] for p in every["spec"]["ports"]} == k8s.PORTS
    assert "sessionAffinity" not in every["spec"]  # any pod takes any image
    assert videos["spec"]["sessionAffinity"] == "ClientIP"  # a client polls its video job on the pod that has it
    assert [p["port"] for p in videos["spec"]["ports"]] == [k8s.PORTS["openai"]]
    deployment = load(written, "deployment.yaml")
    budget = load(written, "disruption-budget.yaml")
    for selector in (every["spec"]["selector"], videos["spec"]["selector"],
                     deployment["spec"]["selector"]["matchLabels"], budget["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "ptdit"}  # immutable: stable
    assert budget["spec"]["maxUnavailable"] == 1  # a drain of a single replica proceeds


def test_an_object_store_is_read_by_triton_with_the_secrets_credentials(pipelines, tmp_path):
    documents = k8s.manifests(k8s.ClusterOptions(store="s3://bucket/models", credentials_secret="s3-keys"),
                              k8s.ServeOptions(), pipelines[256].name)
    pod = documents["deployment.yaml"][0]["spec"]["template"]["spec"]
    assert "volumes" not in pod and "resources" not in pod["containers"][0]  # the CPU: no GPU asked for
    assert "--model-repository=s3://bucket/models" in pod["containers"][0]["command"]
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-keys"}}]
    kubernetes_validate.validate(documents["deployment.yaml"][0], kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("args, message", [
    (["--replicas", "3", "--max-replicas", "2"], "--max-replicas 2 is below --replicas 3"),
    (["--store", "/mnt/models"], "--store takes pvc:CLAIM"),
    (["--store", "pvc:Models_1"], "--store takes pvc:CLAIM"),
    (["--credentials-secret", "keys"], "--credentials-secret is for an object store"),
    (["--store", "s3://b/m", "--credentials-secret", "My_Keys"], "--credentials-secret takes a Secret's name"),
    (["--image", "my image"], "--image takes an image reference"),
    (["--replicas", "0"], "Invalid value for '--replicas'"),
])
def test_refusals_are_one_line_and_leave_nothing(pipelines, tmp_path, args, message):
    done = cli(str(pipelines[256]), "--out", str(tmp_path / "out"), *args)
    assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1], done.stderr
    if not message.startswith("Invalid value"):  # click's own usage errors have their usage lines
        assert done.stderr.startswith("ptdit-serve kubernetes: error: ") and done.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_video_folder_with_a_step_graph_is_refused_before_anything_is_written(video_pipeline, tmp_path):
    done = cli(str(video_pipeline), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "samples with a step graph" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_folder_name_becomes_a_valid_label_value():
    assert k8s.label_value("ptdit-tiny-1408x768+768x1408-pipeline") == "ptdit-tiny-1408x768-768x1408-pipeline"
    assert k8s.label_value("x" * 70 + "-") == "x" * 63 and k8s.label_value("+++") == "ptdit"


def test_the_dockerfile_copies_the_package_and_installs_what_the_backend_runs():
    import configparser

    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    include = [name.strip().rstrip("*") for name in setup["options.packages.find"]["include"].split(",")]
    assert sorted(k8s.PACKAGES) == sorted(include)
    text = k8s.dockerfile(k8s.ServeOptions("tensorrt", "cuda"))
    assert [line.split()[1] for line in text.splitlines() if line.startswith("COPY ")][1:] == list(k8s.PACKAGES)
    assert '"/opt/ptdit[serve,trt]"' in text and '"/opt/ptdit[serve]"' in k8s.dockerfile(k8s.ServeOptions())

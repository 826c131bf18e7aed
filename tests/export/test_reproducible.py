"""What ptdit-export writes is the same bytes from any checkout in any folder, and names no path of the machine that
wrote it: torch.onnx's per-node stack traces (absolute source paths) and its other tracing metadata are dropped."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ptdit", "export", "runtime", "engines")


def machine_paths(*more: Path) -> list[bytes]:
    """Folders of this machine that an artifact must not name: the tests' checkout, the Python installation,
    its site-packages and torch's sources (stack traces run through torch.nn), and `more`."""
    folders = [ROOT, Path(sys.prefix), Path(torch.__file__).parent, *map(Path, site.getsitepackages()), *more]
    return sorted({str(f).encode() for f in folders} | {str(f.resolve()).encode() for f in folders})


def named_paths(data: bytes, paths: list[bytes]) -> list[str]:
    return [p.decode() for p in paths if p in data]


def strings_of(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(where, text) for every doc string and metadata value of the model, its graphs, nodes, values and functions."""
    found = [("model.doc_string", model.doc_string)]
    found += [(f"model.metadata_props[{p.key}]", p.value) for p in model.metadata_props]

    def graph(g: onnx.GraphProto, where: str) -> None:
        found.append((f"{where}.doc_string", g.doc_string))
        found.extend((f"{where}.metadata_props[{p.key}]", p.value) for p in g.metadata_props)
        for v in [*g.input, *g.output, *g.value_info, *g.initializer]:
            found.append((f"{where}.{v.name}.doc_string", v.doc_string))
            found.extend((f"{where}.{v.name}.metadata_props[{p.key}]", p.value) for p in v.metadata_props)
        nodes(g.node, where)

    def nodes(ns, where: str) -> None:
        for n in ns:
            found.append((f"{where}.{n.name}.doc_string", n.doc_string))
            found.extend((f"{where}.{n.name}.metadata_props[{p.key}]", p.value) for p in n.metadata_props)
            for a in n.attribute:
                found.append((f"{where}.{n.name}.{a.name}.doc_string", a.doc_string))
                for i, sub in enumerate([a.g] if a.HasField("g") else [*a.graphs]):
                    graph(sub, f"{where}.{n.name}.{a.name}[{i}]")

    graph(model.graph, "graph")
    for f in model.functions:
        found.append((f"function {f.name}.doc_string", f.doc_string))
        found.extend((f"function {f.name}.metadata_props[{p.key}]", p.value) for p in f.metadata_props)
        nodes(f.node, f"function {f.name}")
    return [(where, text) for where, text in found if text]


def assert_no_build_metadata(path: Path, paths: list[bytes]) -> None:
    model = onnx.load(str(path), load_external_data=False)
    node_keys = {p.key for n in model.graph.node for p in n.metadata_props}
    assert node_keys <= {"namespace"}, f"{path.name}: nodes keep {sorted(node_keys)}"
    for where, text in strings_of(model):
        assert "stack_trace" not in where and "File \"" not in text, f"{path.name}: {where} holds {text[:200]!r}"
        assert not named_paths(text.encode(), paths), f"{path.name}: {where} names a path: {text[:200]!r}"
    assert {p.key for p in model.metadata_props} == {"ptdit.config_sha256", "ptdit.graph", "ptdit.precision"}


def test_a_saved_graph_keeps_only_each_nodes_namespace(tmp_path):
    from export.exporter import save, trace_component
    from ptdit.contract.onnx_manifest import TensorSpec

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 8)

        def forward(self, x):
            return torch.nn.functional.gelu(self.proj(x)) * 2

    module = Tiny().eval()
    graph = trace_component(module, [TensorSpec("x", (2, 8), "float32")], [TensorSpec("y", (2, 8), "float32")], 18)
    traced = {key for node in graph.graph for key in node.metadata_props}
    assert "pkg.torch.onnx.stack_trace" in traced  # what torch.onnx leaves, and save drops
    here = str(Path(__file__).resolve().parent).encode()
    assert any(here in v.encode() for node in graph.graph for v in node.metadata_props.values())
    records = {"ptdit.config_sha256": "0", "ptdit.graph": "g", "ptdit.precision": "fp32"}
    (path,) = save(graph, tmp_path / "tiny.onnx", records)
    assert_no_build_metadata(path, [*machine_paths(tmp_path), here])
    model = onnx.load(str(path))
    namespaces = {n.op_type: {p.key: p.value for p in n.metadata_props}.get("namespace", "") for n in model.graph.node}
    assert "/proj: torch.nn.modules.linear.Linear/" in namespaces["Gemm"]  # the module path and class stay
    onnx.checker.check_model(model, full_check=True)


def source_copy(folder: Path) -> Path:
    """The toolkit's Python packages (no installation, no caches) copied into `folder`."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return folder


@pytest.mark.slow  # exports from two checkouts
def test_the_same_export_from_two_checkouts_is_the_same_bytes(tmp_path):
    """Two copies of the sources in unrelated folders, the same command run from two working directories: every
    file written (the graph and its manifest) is the same bytes, and none names
    either checkout, the working directory or this machine's Python installation."""
    written = []
    for name, where in (("a", "one"), ("b", "two/deeper/checkout")):
        checkout = source_copy(tmp_path / where)
        cwd = tmp_path / f"run-{name}"
        cwd.mkdir()
        env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONDONTWRITEBYTECODE": "1"}
        script = (f"import export, sys; assert export.__file__.startswith({str(checkout)!r}), export.__file__; "
                  "from export.cli import main; sys.argv[0] = 'ptdit-export'; main()")
        result = subprocess.run([sys.executable, "-c", script, "--preset", "tiny", "--res", "256", "--checks",
                                 "none", "--out", "artifacts"], cwd=cwd, env=env, capture_output=True, check=False,
                                text=True)
        assert result.returncode == 0, result.stderr
        out = cwd / "artifacts"
        files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        paths = machine_paths(tmp_path, checkout, cwd)
        for file, data in files.items():
            assert not named_paths(data, paths), f"{file} names {named_paths(data, paths)}"
        for onnx_file in out.glob("*.onnx"):
            assert_no_build_metadata(onnx_file, paths)
        written.append(files)
    first, second = written
    assert sorted(first) == sorted(second) == ["ptdit-tiny-256-b2-fp16.json", "ptdit-tiny-256-b2-fp16.onnx"]
    differ = [file for file in first if first[file] != second[file]]
    assert not differ, f"not the same bytes from the two checkouts: {differ}"


def pipeline_names_no_path(folder: Path) -> None:
    paths = machine_paths()
    for file in sorted(folder.iterdir()):
        data = file.read_bytes()
        assert not named_paths(data, paths), f"{file.name} names {named_paths(data, paths)}"
        if file.suffix == ".onnx":
            assert_no_build_metadata(file, paths)


def test_a_pipeline_folder_names_no_path(pipelines):
    """Every graph (transformer, text encoder, VAE decoder tiles) and every manifest of a pipeline folder."""
    pipeline_names_no_path(pipelines[256])


def test_a_video_pipeline_folder_names_no_path(video_pipeline):
    """Every graph (transformer, step graph, text encoder, VAE decoder chunks) and every manifest of a video folder."""
    pipeline_names_no_path(video_pipeline)

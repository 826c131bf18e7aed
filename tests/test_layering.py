"""The layering rules of docs/ARCHITECTURE.md, checked on the source: every import anywhere in a module (lazy ones
inside functions and type-only ones under `if TYPE_CHECKING:` too)."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ptdit", "export", "engines", "runtime", "bench")
TENSORRT = {"tensorrt", "tensorrt_lean", "tensorrt_rtx"}
FORBIDDEN = {
    "ptdit": {"onnx", "onnxruntime", "export", "engines", "runtime", "bench"} | TENSORRT,
    "export": {"engines", "runtime", "bench"} | TENSORRT,
    "engines": {"torch", "ptdit", "runtime", "export", "bench"},
    "runtime": {"export", "engines", "bench"},
    # ptdit-bench sits above the stages and measures the engine build and the runtime through their own commands, in
    # child processes (so each stage's peak RSS is its own): it imports neither, nor TensorRT.
    "bench": {"engines", "runtime"} | TENSORRT,
}
# The one place of shared facts (manifests, file hashing, dtype names, the TensorRT flavours and logger, the exit
# codes, how outputs are published, the ranges of numbers): every stage may import it, and it imports the standard
# library only (onnx and numpy lazily, inside the functions of its bf16 twin and its graph check, and for types;
# numpy and safetensors inside the reader of users' array files;
# tensorrt for types only; click in the module of the command-line types).
CONTRACT = "ptdit.contract"
CONTRACT_LAZY = {"onnx", "numpy", "safetensors"}
CONTRACT_CLICK = "ptdit/contract/cli_types.py"  # the command-line types every stage's options use (and, lazily,
# tqdm for the progress bars of its Console)
# TensorRT modules are loaded by name through ptdit.contract.tensorrt.import_flavour, by these modules alone; the
# import statements elsewhere are for TensorRT's types only (under TYPE_CHECKING).
TENSORRT_LOADERS = {"export/checks/tensorrt_parse.py", "engines/tensorrt_api.py",
                    "runtime/backends/tensorrt/flavour.py"}
TYPE_ONLY_TENSORRT = {"export/checks/tensorrt_parse.py", "ptdit/contract/tensorrt.py"}
# The runtime uses torch, the model and onnxruntime only inside the optional backends that need them.
RUNTIME_OPTIONAL = {"torch", "onnxruntime"}
RUNTIME_OPTIONAL_MODULES = {"runtime/backends/torch_session.py", "runtime/backends/onnxruntime_session.py"}
# The runtime reads as one stack: a module imports only from its own layer or the ones below it.
RUNTIME_LAYERS = [("cli", "bench", "bench_decode", "__main__"), ("diff", "serve"), ("pipeline",), ("sampling",),
                  ("session",), ("backends",), ("artifact", "errors", "run_options")]
MAX_LINES = 350


@dataclass(frozen=True)
class Import:
    module: str  # absolute, e.g. "ptdit.contract.errors" or "torch"
    names: tuple[str, ...]  # what a `from` import takes
    in_function: bool
    type_only: bool  # under `if TYPE_CHECKING:`

    @property
    def root(self) -> str:
        return self.module.split(".")[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def imports_of(path: Path) -> tuple[Import, ...]:
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, (), in_function, type_only) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append(Import(module, tuple(a.name for a in node.names), in_function, type_only))
        for child in ast.iter_child_nodes(node):
            checking = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) and child in node.body
            visit(child, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)),
                  type_only or checking)

    visit(ast.parse(path.read_text()), False, False)
    return tuple(found)


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("package", PACKAGES)
def test_dependency_rules(package):
    violations = []
    for path in sources(package):
        if rel(path).startswith("ptdit/contract/"):
            continue  # its own rules: below
        for imp in imports_of(path):
            if imp.module == CONTRACT or imp.module.startswith(CONTRACT + "."):
                continue  # every stage may use the contract
            bad = imp.root in FORBIDDEN[package]
            if imp.root in TENSORRT and imp.type_only and rel(path) in TYPE_ONLY_TENSORRT:
                bad = False
            if package == "runtime" and rel(path) not in RUNTIME_OPTIONAL_MODULES:
                bad = bad or imp.root in RUNTIME_OPTIONAL or imp.root == "ptdit"
            if bad:
                violations.append(f"{rel(path)} imports {imp.module}")
    assert not violations, violations


def test_tensorrt_is_loaded_by_the_flavour_modules_alone():
    loaders = {rel(p) for package in PACKAGES for p in sources(package) if rel(p) != "ptdit/contract/tensorrt.py"
               and any(isinstance(n, ast.Call)
                       and getattr(n.func, "id", getattr(n.func, "attr", "")) == "import_flavour"
                       for n in ast.walk(ast.parse(p.read_text())))}
    assert loaders == TENSORRT_LOADERS


def test_the_contract_imports_only_the_standard_library():
    violations = []
    for path in sources("ptdit/contract"):
        for imp in imports_of(path):
            ours = imp.module == CONTRACT or imp.module.startswith(CONTRACT + ".")
            allowed = ours or imp.root in sys.stdlib_module_names or imp.root == "__future__"
            if imp.in_function:
                allowed = allowed or imp.root in CONTRACT_LAZY
            if imp.type_only:
                allowed = allowed or imp.root in TENSORRT | CONTRACT_LAZY
            if rel(path) == CONTRACT_CLICK:
                allowed = allowed or imp.root == "click" or (imp.in_function and imp.root == "tqdm")
            if not allowed:
                violations.append(f"{rel(path)} imports {imp.module}")
    assert not violations, violations


def project_module(imp: Import, known: set[str]) -> list[str]:
    """The project's modules an import loads: the module itself, or for `from pkg import x` the submodule x."""
    if imp.module not in known:
        return []
    submodules = [f"{imp.module}.{n}" for n in imp.names if f"{imp.module}.{n}" in known]
    return submodules or [imp.module]


def find_circles(graph: dict[str, set[str]]) -> list[str]:
    """Every import circle a depth-first walk meets, as "a -> b -> a"."""
    circles: list[str] = []
    state: dict[str, str] = {}

    def walk(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(" -> ".join([*trail[trail.index(nxt):], node, nxt] if nxt in trail else [node, nxt]))
            elif nxt not in state:
                walk(nxt, [*trail, node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [])
    return circles


def test_the_circle_finder_finds_circles():
    assert find_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a -> b -> c -> a"]
    assert find_circles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circles():
    """Not even through a lazy or a type-only import."""
    paths = [p for package in PACKAGES for p in sources(package)]
    known = {module_name(p) for p in paths}
    graph = {module_name(p): {m for imp in imports_of(p) for m in project_module(imp, known)} - {module_name(p)}
             for p in paths}
    assert not find_circles(graph)


def runtime_layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    return next(i for i, layer in enumerate(RUNTIME_LAYERS) if part in layer)


def test_the_runtime_is_one_stack():
    """cli > diff > pipeline > sampling > session > backends > artifact: nothing imports upwards."""
    violations = []
    for path in sources("runtime"):
        if path.name == "__init__.py" and path.parent.name == "runtime":
            continue
        here = runtime_layer(module_name(path))
        for imp in imports_of(path):
            if imp.root == "runtime" and imp.module != "runtime" and runtime_layer(imp.module) < here:
                violations.append(f"{rel(path)} imports {imp.module}")
    assert not violations, violations


def test_no_module_is_over_350_lines():
    long = [f"{rel(p)}: {n} lines" for package in PACKAGES for p in sources(package)
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, long

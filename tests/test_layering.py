"""The dependency rules of DESIGN.md, checked on the source (imports anywhere in a module, lazy ones too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TENSORRT = {"tensorrt", "tensorrt_lean", "tensorrt_rtx"}
FORBIDDEN = {
    "ptdit": {"onnx", "onnxruntime", "export", "engines", "runtime"} | TENSORRT,
    "export": {"engines", "runtime"} | TENSORRT,
    "engines": {"torch", "ptdit", "runtime", "export"},
    "runtime": {"export", "engines"},
}
# The export stage parses what it wrote with TensorRT's own parser, in this one module only.
ALLOWED = {"export/tensorrt_parse.py": {"tensorrt", "tensorrt_rtx"}}
# runtime may use torch / ptdit / onnxruntime only inside the optional backends that need them.
RUNTIME_OPTIONAL = {"torch", "ptdit", "onnxruntime"}
RUNTIME_BACKEND_MODULES = {"backend_torch.py", "backend_onnxruntime.py"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_rules(package):
    violations = []
    for path in sorted((ROOT / package).rglob("*.py")):
        roots = imported_roots(path)
        bad = roots & FORBIDDEN[package] - ALLOWED.get(str(path.relative_to(ROOT)), set())
        if package == "runtime" and path.name not in RUNTIME_BACKEND_MODULES:
            bad |= roots & RUNTIME_OPTIONAL
        if bad:
            violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations, violations


def test_backends_depend_on_the_session_types_not_on_the_session_module():
    """runtime/session.py opens the backends; they take their shared types from runtime/tensors.py and
    runtime/tensorrt_flavour.py, so nothing imports in a circle."""
    for name in sorted(RUNTIME_BACKEND_MODULES | {"backend_tensorrt.py"}):
        tree = ast.parse((ROOT / "runtime" / name).read_text())
        relative = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
        assert "session" not in relative, f"runtime/{name} imports runtime/session.py"

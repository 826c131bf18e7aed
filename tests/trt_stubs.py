"""TensorRT bindings without TensorRT: import them and generate type stubs on a machine with no GPU.

PyPI's tensorrt-cuXX-bindings wheels hold only the pybind11 module; its libnvinfer* dependencies come from
NVIDIA's own index. This builds stand-in shared libraries that export the C entry points the module
imports (each returns 0 / NULL), so that the real module imports: enums, classes, signatures and Python
subclasses are all real, while trt.Builder() and trt.Runtime() raise TypeError. Nothing can be built or run.

For one bindings version it prepares, under a cache directory:
  site/   the extracted bindings plus `tensorrt` / `tensorrt_lean` shim packages (for PYTHONPATH)
  lib/    the stand-in libraries (for LD_LIBRARY_PATH)
  stubs/  .pyi stubs from pybind11-stubgen, with the same shims (for MYPYPATH)

TensorRT-RTX needs no stand-ins: its wheels (tensorrt-rtx-cu13, with its libraries) install and import on a
machine without a GPU. For the installed version, prepare_rtx() makes, under CACHE/rtx-<version>:
  stubs/        .pyi stubs of tensorrt_rtx_bindings plus a `tensorrt_rtx` shim (for MYPYPATH)
  as-tensorrt/  a `tensorrt` shim stub re-exporting tensorrt_rtx_bindings: code typed against `tensorrt`
                (to which the tensorrt_rtx module is passed at run time) is then checked against the RTX API

    python tests/trt_stubs.py 10.13.3.9 11.4.0.106      # prints the directories (and the RTX ones)
Needs pip (PyPI), gcc, nm and readelf (binutils), and pybind11-stubgen.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("PTDIT_TRT_STUB_CACHE", Path(__file__).resolve().parent.parent / ".cache" / "trt"))
PACKAGES = {"tensorrt": "tensorrt_bindings", "tensorrt_lean": "tensorrt_lean_bindings"}
RTX_BINDINGS = "tensorrt_rtx_bindings"
RTX_DISTRIBUTION = "tensorrt_rtx_cu13_bindings"


@dataclass(frozen=True)
class Bindings:
    version: str
    root: Path

    @property
    def site(self) -> Path:
        return self.root / "site"

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def stubs(self) -> Path:
        return self.root / "stubs"

    @property
    def env(self) -> dict[str, str]:
        """Environment in which `import tensorrt` gives these bindings."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(self.lib), env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
        return env


def flavour(version: str) -> str:
    return "cu13" if int(version.split(".")[0]) >= 11 else "cu12"


def _run(cmd: list[str], **kwargs) -> str:  # type: ignore[no-untyped-def]
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def _download(version: str, dest: Path) -> list[Path]:
    wheels = []
    for kind in ("", "lean-"):
        name = f"tensorrt-{kind}{flavour(version)}-bindings=={version}"
        before = set(dest.glob("*.whl"))
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", name, "-d", str(dest)])
        wheels += sorted(set(dest.glob("*.whl")) - before)
    return wheels


def _stand_in_libraries(module: Path, version: str, lib: Path, work: Path) -> None:
    """One C file exporting every symbol the module imports from the TensorRT libraries, built under each
    library name the module links against."""
    symbols = set()
    for line in _run(["nm", "-D", "--undefined-only", str(module)]).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U" and "@" not in parts[1]:
            symbols.add(parts[1])
    symbols = {s for s in symbols
               if not s.startswith(("Py", "_Py")) and s not in ("dlopen", "dlsym", "dlclose", "dlerror")}
    major, minor, patch = (int(v) for v in version.split(".")[:3])
    lines = [f"void* {s}(void) {{ return 0; }}" for s in sorted(symbols - {"getInferLibVersion"})]
    lines.append(f"int getInferLibVersion(void) {{ return {major * 10000 + minor * 100 + patch}; }}")
    source = work / f"{module.stem}_stand_in.c"
    source.write_text("\n".join(lines) + "\n")
    needed = [line.split("[", 1)[1].rstrip("]") for line in _run(["readelf", "-d", str(module)]).splitlines()
              if "(NEEDED)" in line and "[libnv" in line]
    for soname in needed:
        if not (lib / soname).exists():
            _run(["gcc", "-shared", "-fPIC", "-o", str(lib / soname), f"-Wl,-soname,{soname}", str(source)])


_DEF = re.compile(r"^(\s*def \w+\()(.*)(\)\s*(?:->.*)?:\s*)$")


def _split_top_level(params: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in params:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return parts + [current] if current.strip() else parts


def _repair_def(line: str) -> str:
    """pybind11-stubgen writes what C++ allows and Python does not: parameters named `in`, and parameters
    without a default after ones with a default. Rename the first, give the second `= ...`. The builtin
    `bool` in annotations is spelled builtins.bool."""
    match = _DEF.match(line)
    if not match:
        return line
    # The module defines `bool = DataType.BOOL`, which shadows the builtin in every annotation.
    line = re.sub(r"(?<![\w.])bool\b", "builtins.bool", line)
    match = _DEF.match(line)
    assert match
    fixed, seen_default, keyword_only = [], False, False
    for param in _split_top_level(match.group(2)):
        text = param.strip()
        if text.startswith("*") or text == "/":
            keyword_only = keyword_only or text.startswith("*")
            fixed.append(text)
            continue
        name = re.split(r"[:=]", text, maxsplit=1)[0].strip()
        if keyword.iskeyword(name):
            text = name + "_" + text[len(name):]
        if "=" in text.split(":", 1)[-1] or re.match(r"^\w+\s*=", text):
            seen_default = True
        elif seen_default and not keyword_only:
            text += " = ..."
        fixed.append(text)
    return match.group(1) + ", ".join(fixed) + match.group(3)


def _repair_stubs(root: Path) -> None:
    for path in root.rglob("*.pyi"):
        text = "import builtins\n" + "\n".join(_repair_def(line) for line in path.read_text().splitlines()) + "\n"
        ast.parse(text, filename=str(path))  # fail here, not in mypy, if a stub is still not Python
        path.write_text(text)


def _write_shims(root: Path, suffix: str) -> None:
    for package, bindings in PACKAGES.items():
        if (root / bindings).exists():
            (root / package).mkdir(exist_ok=True)
            (root / package / f"__init__{suffix}").write_text(
                f"from {bindings} import *\nfrom {bindings} import __version__ as __version__\n")


def prepare(version: str, cache: Path = CACHE) -> Bindings:
    """Idempotent: returns at once when the directories exist."""
    target = Bindings(version, cache / version)
    if (target.root / "complete").exists():
        return target
    shutil.rmtree(target.root, ignore_errors=True)
    for d in (target.site, target.lib, target.stubs):
        d.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for wheel in _download(version, work):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(target.site)
        for module in target.site.glob("*_bindings/tensorrt*.so"):
            _stand_in_libraries(module, version, target.lib, work)
    _write_shims(target.site, ".py")
    for bindings in PACKAGES.values():
        if (target.site / bindings).exists():
            _run([sys.executable, "-m", "pybind11_stubgen", bindings, "-o", str(target.stubs), "--ignore-all-errors"],
                 env=target.env)
    _repair_stubs(target.stubs)
    _write_shims(target.stubs, ".pyi")
    (target.root / "complete").write_text(version + "\n")
    return target


@dataclass(frozen=True)
class RtxStubs:
    version: str
    root: Path

    @property
    def stubs(self) -> Path:
        """tensorrt_rtx_bindings and the `tensorrt_rtx` shim."""
        return self.root / "stubs"

    @property
    def as_tensorrt(self) -> Path:
        """A `tensorrt` shim over tensorrt_rtx_bindings (use together with `stubs`)."""
        return self.root / "as-tensorrt"


def rtx_version() -> str | None:
    """The version of the installed TensorRT-RTX bindings, or None when they are not installed."""
    try:
        return importlib.metadata.version(RTX_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def _write_shim(path: Path, bindings: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "__init__.pyi").write_text(f"from {bindings} import *\nfrom {bindings} import __version__ as __version__\n")


def prepare_rtx(cache: Path = CACHE) -> RtxStubs | None:
    """Stubs of the installed TensorRT-RTX bindings (None when not installed). Idempotent, like prepare()."""
    version = rtx_version()
    if version is None or importlib.util.find_spec(RTX_BINDINGS) is None:
        return None
    target = RtxStubs(version, cache / f"rtx-{version}")
    if (target.root / "complete").exists():
        return target
    shutil.rmtree(target.root, ignore_errors=True)
    target.stubs.mkdir(parents=True)
    _run([sys.executable, "-m", "pybind11_stubgen", RTX_BINDINGS, "-o", str(target.stubs), "--ignore-all-errors"])
    _repair_stubs(target.stubs)
    _write_shim(target.stubs / "tensorrt_rtx", RTX_BINDINGS)
    _write_shim(target.as_tensorrt / "tensorrt", RTX_BINDINGS)
    (target.root / "complete").write_text(version + "\n")
    return target


if __name__ == "__main__":
    for v in sys.argv[1:] or ["10.13.3.9", "11.4.0.106"]:
        b = prepare(v)
        print(f"{v}: PYTHONPATH={b.site} LD_LIBRARY_PATH={b.lib} MYPYPATH={b.stubs}")
    rtx = prepare_rtx()
    if rtx is None:
        print(f"TensorRT-RTX: not installed ({RTX_DISTRIBUTION})")
    else:
        print(f"TensorRT-RTX {rtx.version}: MYPYPATH={rtx.stubs} "
              f"(as tensorrt: {rtx.as_tensorrt}{os.pathsep}{rtx.stubs})")

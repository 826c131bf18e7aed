"""Where the Triton Inference Server comes from and the Python its models run in.

`ptdit-serve setup` makes ENV (default ~/.cache/ptdit/tritonserver-py3.X): a virtual environment of this Python
holding numpy 1.26 and the tritonserver of the nvidia-pytriton wheel, with a .pth that puts this environment's
packages (onnxruntime, tokenizers, this project...) after its own. The server's Python backend runs each model in
an embedded interpreter (its stub) that ignores PYTHON* variables and takes its prefix from the first `python3`
on PATH, so PATH=ENV/bin gives the stub ENV's site-packages, with numpy 1.26 first.

Why numpy < 2: the stub of nvidia-pytriton 0.7.0 is built with a pybind11 from before numpy 2 support (it
imports numpy.core.multiarray and reads the dtype's itemsize at numpy 1's offset in PyArray_Descr, which numpy 2
moved). Under numpy 2 it makes zero-stride arrays: a BYTES input of 13 bytes reads as its first byte repeated
(a length prefix of 0x09090909) and the stub dies; measured with numpy 2.4.6, fine with 1.26.4.

A `tritonserver` on PATH (NVIDIA's container) is used as it is: its models run in its own Python.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from ptdit.contract.errors import Failure, InputError
from ptdit.contract.files import write_atomically
from ptdit.contract.progress import Reporter

PYTRITON = "nvidia-pytriton==0.7.0"
MODEL_NUMPY = "numpy==1.26.4"
MARKER = "ptdit-serve-env.json"
PTH = "ptdit-main-env.pth"


def default_env_dir() -> Path:
    """$PTDIT_SERVE_ENV, else one per Python version and per checkout with its packages (the environment's .pth
    points at them: two checkouts never share one, so a server never runs another checkout's code)."""
    if os.environ.get("PTDIT_SERVE_ENV"):
        return Path(os.environ["PTDIT_SERVE_ENV"])
    ours = hashlib.sha256("\n".join(_our_paths()).encode()).hexdigest()[:8]
    return Path.home() / ".cache" / "ptdit" / f"tritonserver-py{sys.version_info[0]}.{sys.version_info[1]}-{ours}"


@dataclass(frozen=True)
class TritonServer:
    """A tritonserver binary and what it needs to run our models: its backends folder (None: the server's own)
    and the environment variables for its Python backend."""

    binary: Path
    backend_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def environ(self) -> dict[str, str]:
        merged = dict(os.environ)
        for key, value in self.env.items():
            merged[key] = f"{value}:{merged[key]}" if key in ("PATH", "LD_LIBRARY_PATH") and merged.get(key) else value
        return merged


def _site_packages(env_dir: Path) -> Path:
    return env_dir / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def _python_lib_dir() -> str | None:
    """The folder of this Python's libpython, so the stub loads the same one (and so the same prefix)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("LDLIBRARY")
    if libdir and library and (Path(libdir) / library).exists():
        return str(libdir)
    return None


def _our_paths() -> list[str]:
    """This environment's package folders, and the folder this project is imported from (an editable install)."""
    import runtime

    paths = [str(Path(runtime.__file__).resolve().parent.parent)]
    paths += [p for p in site.getsitepackages() + [site.getusersitepackages()] if Path(p).is_dir()]
    return list(dict.fromkeys(paths))


def setup(env_dir: Path, progress: Reporter = print, force: bool = False) -> TritonServer:
    """Make (or with force, remake) the server environment at env_dir; a complete one is reused. Its marker file
    is written last: a folder without it (an interrupted setup) is never used, and the next setup remakes it."""
    if (env_dir / MARKER).exists() and not force:
        progress(f"ptdit-serve: {env_dir} is set up ({PYTRITON}, {MODEL_NUMPY})")
        return find_server(env_dir)
    if env_dir.exists() and any(env_dir.iterdir()) and not (env_dir / "pyvenv.cfg").exists():  # --force too
        raise InputError(f"{env_dir} exists and is not a server environment: pass another --env, or remove it")
    shutil.rmtree(env_dir, ignore_errors=True)
    progress(f"ptdit-serve: a Python environment at {env_dir}")
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], "making the virtual environment")
    target = _site_packages(env_dir)
    progress(f"ptdit-serve: pip install {PYTRITON} {MODEL_NUMPY} (about 75 MB of wheels)")
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), PYTRITON,
          MODEL_NUMPY], f"pip install {PYTRITON} {MODEL_NUMPY}")
    _point_at_us(target)
    _link_backend(target, env_dir / "server" / "backends" / "python")
    check = subprocess.run([str(env_dir / "bin" / "python3"), "-c", "import numpy, runtime; print(numpy.__version__)"],
                           capture_output=True, text=True)
    if check.returncode != 0 or not check.stdout.startswith("1."):
        raise Failure(f"the server environment {env_dir} does not import numpy 1.x and this project: "
                      f"{(check.stderr.strip().splitlines() or [check.stdout.strip()])[-1]}")
    (env_dir / MARKER).write_text(json.dumps({"pytriton": PYTRITON, "numpy": MODEL_NUMPY,
                                              "python": sys.version.split()[0]}, indent=2) + "\n")
    server = find_server(env_dir)
    progress(f"ptdit-serve: ready: {server.binary}")
    return server


def _point_at_us(site_dir: Path) -> None:
    """The .pth that gives the server's Python this environment's packages and this checkout of the project."""
    write_atomically(site_dir / PTH, lambda tmp: tmp.write_text("\n".join(_our_paths()) + "\n"))


def _link_backend(site_dir: Path, backend: Path) -> None:
    """A backends folder whose Python backend has the stub of this Python version (the wheel keeps one per
    version aside, as PyTriton does)."""
    dist = site_dir / "pytriton" / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        have = sorted(p.name for p in (dist / "python_backend_stubs").iterdir())
        raise InputError(f"{PYTRITON} has Python backend stubs for Python {', '.join(have)}, not {version}: run "
                         f"ptdit-serve with one of those")
    backend.mkdir(parents=True)
    for source in (dist / "backends" / "python" / "libtriton_python.so",
                   dist / "backends" / "python" / "triton_python_backend_utils.py", stub):
        (backend / source.name).symlink_to(source)


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
        raise Failure(f"{what} failed: {lines[-1] if lines else f'exit code {done.returncode}'}")


def find_server(env_dir: Path | None = None, tritonserver: Path | None = None) -> TritonServer:
    """The server to run: `tritonserver` if given, else the one ptdit-serve setup made at env_dir (default:
    default_env_dir()), else a tritonserver on PATH."""
    if tritonserver is not None:
        if not tritonserver.is_file() or not os.access(tritonserver, os.X_OK):
            raise InputError(f"{tritonserver} is not an executable tritonserver")
        return TritonServer(tritonserver, source="given")
    env_dir = env_dir or default_env_dir()
    if (env_dir / MARKER).exists():
        binary = _site_packages(env_dir) / "pytriton" / "tritonserver" / "bin" / "tritonserver"
        if not binary.exists():
            raise InputError(f"{env_dir} has no tritonserver any more: run ptdit-serve setup --force")
        pth = _site_packages(env_dir) / PTH
        if pth.read_text().splitlines() != _our_paths():
            listed = ", ".join(pth.read_text().splitlines())
            raise InputError(f"{env_dir} was set up for another checkout or environment (its {PTH} lists "
                             f"{listed}): run ptdit-serve setup --env {env_dir} --force")
        env = {"PATH": str(env_dir / "bin")}
        libdir = _python_lib_dir()
        if libdir:
            env["LD_LIBRARY_PATH"] = libdir
        return TritonServer(binary, env_dir / "server" / "backends", env, source=f"{PYTRITON} in {env_dir}")
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonServer(Path(on_path), source="PATH")
    raise InputError(f"no Triton Inference Server: run ptdit-serve setup (a Python environment at {env_dir} with "
                     f"the tritonserver of {PYTRITON} and {MODEL_NUMPY}, about 300 MB), or put tritonserver on PATH")

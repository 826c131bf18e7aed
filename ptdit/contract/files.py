"""Files between the stages: sha256 of what a manifest lists, JSON read and written one way, a cache written
atomically."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import InputError


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(directory: Path, recorded: dict[str, str], manifest: str, fix: str) -> None:
    """Every file `manifest` lists must be in `directory` with the sha256 recorded there."""
    for name, sha256 in recorded.items():
        f = directory / name
        if not f.is_file():
            raise InputError(f"{f} is missing: {manifest} lists it as part of the artifact; {fix}")
        if file_sha256(f) != sha256:
            raise InputError(f"{f} does not match {manifest} (sha256 differs): the file is corrupt or was replaced; "
                             f"{fix}")


def read_json(path: Path, missing: str) -> dict[str, Any]:
    """The JSON object at `path`; `missing` is the one-line error when there is no file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(missing) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"manifest {path} is not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"manifest {path} is not a JSON object")
    return data


def json_text(data: Any) -> str:
    """Sorted keys, two-space indent, a final newline: the same data gives the same bytes."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_json(path: Path, data: Any) -> None:
    path.write_text(json_text(data))


PACKAGES = ("ptdit", "export", "engines", "runtime")  # the toolkit's own packages, side by side


def source_package_of(target: Path) -> Path | None:
    """The toolkit package (its source tree, or where it is installed) that `target` lies in, if any: outputs
    never go there (`--out engines/` from a clone's root would mix plans with the code)."""
    root = Path(__file__).resolve().parents[2]
    resolved = target.resolve()
    for name in PACKAGES:
        package = root / name
        if (package / "__init__.py").is_file() and resolved.is_relative_to(package):
            return package
    return None


def refuse_in_packages(target: Path) -> None:
    package = source_package_of(target)
    if package is not None:
        raise InputError(f"{target} would be written inside this toolkit's package {package}: write it somewhere "
                         f"else (artifacts/, plans/...)")


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """write(temporary path) next to `path`, then renamed onto it: a reader never sees a partial file, two writers
    never share a temporary name, and a failed or interrupted write leaves nothing. For a cache that any run may
    replace; a command's outputs are published with ptdit.contract.outputs."""
    refuse_in_packages(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

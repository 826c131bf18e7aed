"""The two kinds of error every stage raises (how a command turns them into exit codes: ptdit.contract.commands),
and how a message names an option: by the name of the caller's own kind (`option`)."""

from __future__ import annotations

import re
from typing import Callable, Mapping

_OPTION = re.compile("\x1f([A-Za-z_][A-Za-z0-9_]*)(?:\x1e([^\x1f]*))?\x1f")
NameOf = Callable[[str], str]  # a parameter's name -> how the caller knows it


def option(name: str, value: object = None) -> str:
    """An option in an error message, by its Python parameter name, optionally with the value to pass: a Python
    caller reads `steps`, `device='cpu'`, `force=True`; a command reads its own flag, `--steps`, `--device cpu`,
    `--force` (InputError.render)."""
    return f"\x1f{name}\x1f" if value is None else f"\x1f{name}\x1e{value!r}\x1f"


def flag_of(name: str) -> str:
    """The command-line flag of parameter `name` unless a command names it otherwise: text_len -> --text-len."""
    return "--" + name.replace("_", "-")


def _as_python(name_of: NameOf) -> Callable[[re.Match[str]], str]:
    return lambda m: name_of(m[1]) if m[2] is None else f"{name_of(m[1])}={m[2]}"


def _as_flag(name_of: NameOf) -> Callable[[re.Match[str]], str]:
    def shown(m: re.Match[str]) -> str:
        value = m[2]
        if value is None or value == "True":
            return name_of(m[1])
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        return f"{name_of(m[1])} {value}"
    return shown


class InputError(ValueError):
    """Bad input or environment: an unsupported value, a wrong or foreign file, a missing package, a plan for
    another GPU, an output another run is writing. The message names the problem and the fix. Exit code 2.

    Options are named in the message with `option(name)`: str(error) shows the Python parameter names, and a
    command shows its flags (render); an API whose parameters are called otherwise renames them (renamed)."""

    @property
    def template(self) -> str:
        return str(self.args[0]) if self.args else ""

    def render(self, flag: NameOf = flag_of) -> str:
        """The message as a command shows it: each option as its flag (`flag`: parameter name -> flag)."""
        return _OPTION.sub(_as_flag(flag), self.template)

    def renamed(self, names: Mapping[str, str]) -> InputError:
        """The same error naming the options as `names` maps them (steps -> num_inference_steps)."""
        def rename(m: re.Match[str]) -> str:
            return m[0].replace(m[1], names.get(m[1], m[1]), 1)
        return InputError(_OPTION.sub(rename, self.template))

    def __str__(self) -> str:
        return _OPTION.sub(_as_python(lambda name: name), self.template)


class Failure(RuntimeError):
    """The work itself failed (a check, a build, a backend run). Exit code 1."""


# Import names whose pip package is called otherwise (ModuleNotFoundError names the import).
PIP_NAMES = {"onnxruntime": "onnxruntime-gpu", "onnx_ir": "onnx-ir", "tensorrt_rtx": "tensorrt-rtx-cu13",
             "cuda": "cuda-python", "PIL": "pillow", "yaml": "pyyaml", "tritonclient": "'tritonclient[grpc]'"}

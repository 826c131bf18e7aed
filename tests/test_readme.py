"""The README's examples, run top to bottom as a newcomer would, in one temporary folder (also $HOME, so ~/.cache
stays inside it), with the `tiny` preset in place of `xl` (the substitution below, documented in the README).

Every ```bash command (one logical line; `\\` continues it) and every ```python block is one test, in README
order. A command whose comment says `# needs ...` (a GPU, full TensorRT, the published weights) is skipped with
that reason; the install in front of `&&` in the setup commands is what CI has already done. A README change that
breaks an example fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the docs' examples

README = Path(__file__).resolve().parents[1] / "README.md"
NEEDS = re.compile(r"#\s*(needs\b.*)$")
INSTALL = re.compile(r"^python3 -m pip install [^&]*&&\s*")


@dataclass(frozen=True)
class Example:
    line: int
    kind: str  # "bash" or "python"
    code: str

    @property
    def id(self) -> str:
        first = self.code.strip().splitlines()[0]
        return f"README:{self.line} {first[:60]}"


def examples(text: str) -> list[Example]:
    found: list[Example] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(bash|python)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, body = i + 1, []
        i += 1
        while not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        if fence[1] == "python":
            found.append(Example(start + 1, "python", "\n".join(body)))
            continue
        command, first = "", start
        for n, line in enumerate(body):
            if not command:
                first = start + n
            command += line.rstrip()
            if command.endswith("\\"):
                command = command[:-1].rstrip() + " "
                continue
            if command.strip():
                found.append(Example(first + 1, "bash", command.strip()))
            command = ""
    return found


def tiny(code: str) -> str:
    """The README's `xl` examples with the tiny preset: the same commands in seconds instead of minutes."""
    code = code.replace("ptdit-xl-", "ptdit-tiny-").replace('preset("xl")', 'preset("tiny")')
    code = code.replace("--preset xl", "--preset tiny")
    if re.match(r"^ptdit-export\b", code) and "--preset" not in code and "--config" not in code:
        code = re.sub(r"^ptdit-export\b", "ptdit-export --preset tiny", code)
    return code


def why_skipped(example: Example) -> str | None:
    if example.kind != "bash":
        return None
    needs = NEEDS.search(example.code)
    if needs:
        return needs[1]
    if INSTALL.sub("", example.code).startswith("python3 -m pytest"):
        return "the test suite itself (this test is part of it)"
    return None


EXAMPLES = examples(README.read_text())


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("readme")


def test_the_readme_has_examples_of_every_command():
    commands = {e.code.split()[0] for e in EXAMPLES if e.kind == "bash"}
    assert {"ptdit-export", "ptdit-build", "ptdit-run", "ptdit-diff"} <= commands
    assert sum(e.kind == "python" for e in EXAMPLES) >= 3
    assert tiny("ptdit-export --res 1024 --step") == "ptdit-export --preset tiny --res 1024 --step"
    assert why_skipped(Example(1, "bash", "ptdit-build x.onnx   # needs full TensorRT")) == "needs full TensorRT"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_readme_example(example: Example, folder: Path):
    reason = why_skipped(example)
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "HOME": str(folder), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(README.parent), os.environ.get("PYTHONPATH", "")])}
    code = tiny(INSTALL.sub("", example.code) if example.kind == "bash" else example.code)
    command = ["bash", "-c", code] if example.kind == "bash" else [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (f"README line {example.line} failed (exit {result.returncode}):\n{code}\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

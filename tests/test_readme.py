"""The docs' examples, run top to bottom as a newcomer would: README.md first, then every page of docs/ in the order of
PAGES, all in one temporary folder (also $HOME, so ~/.cache stays inside it), with the `tiny` preset in place of
`xl` (the substitution below, documented in the README).

Every ```bash command (one logical line; `\\` continues it) and every ```python block is one test, in page order and
within a page in text order: an example may use what an earlier one made, on its page or on an earlier page. A
command whose comment says `# needs ...` (a GPU, full TensorRT, the published weights) is skipped with that reason;
the install in front of `&&` in the setup commands is what CI has already done. A docs change that breaks an example
fails here, and so does a page with examples that PAGES leaves out, or a relative link that leads nowhere.
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

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The order the examples run in: the README's set-up and tour first, then each topic in the order of today's
# README sections, so that an example finds what earlier ones made (a pipeline folder, an export, a plan).
PAGES = ["README.md", "docs/python.md", "docs/model.md", "docs/export.md", "docs/fp8.md", "docs/engines.md",
         "docs/runtime.md", "docs/pipelines.md", "docs/caching.md", "docs/serving.md", "docs/diff.md",
         "docs/differences.md", "docs/failures.md", "docs/benchmarks.md", "docs/ARCHITECTURE.md"]
README_MAX_LINES = 300
NEEDS = re.compile(r"#\s*(needs\b.*)$")
INSTALL = re.compile(r"^python3 -m pip install [^&]*&&\s*")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Example:
    line: int
    kind: str  # "bash" or "python"
    code: str
    page: str = "README.md"

    @property
    def id(self) -> str:
        first = self.code.strip().splitlines()[0]
        return f"{self.page}:{self.line} {first[:60]}"


def examples(text: str, page: str = "README.md") -> list[Example]:
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
            found.append(Example(start + 1, "python", "\n".join(body), page))
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
                found.append(Example(first + 1, "bash", command.strip(), page))
            command = ""
    return found


def tiny(code: str) -> str:
    """The docs' `xl` examples with the tiny preset: the same commands in seconds instead of minutes."""
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


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def outside_code(text: str) -> list[str]:
    """The page's lines outside fenced code blocks."""
    kept, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(line)
    return kept


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in outside_code(path.read_text()):
        heading = re.match(r"^#{1,6}\s+(.*)$", line)
        if heading:
            base = slug(heading[1])
            name, n = base, 0
            while name in found:
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def documentation() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


EXAMPLES = [e for page in PAGES for e in examples((ROOT / page).read_text(), page)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The newcomer's folder; the examples that use a committed file of the checkout (the trained tiny checkpoint,
    bench/data/) run from a checkout's root, so its bench/data is there too."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "bench").mkdir()
    (folder / "bench" / "data").symlink_to(ROOT / "bench" / "data")
    return folder


def test_the_readme_has_examples_of_every_command():
    commands = {e.code.split()[0] for e in EXAMPLES if e.kind == "bash"}
    assert {"ptdit-export", "ptdit-build", "ptdit-run", "ptdit-diff", "ptdit-serve", "ptdit-bench",
            "ptdit-cache"} <= commands
    assert sum(e.kind == "python" for e in EXAMPLES) >= 3
    assert tiny("ptdit-export --res 1024 --step") == "ptdit-export --preset tiny --res 1024 --step"
    assert why_skipped(Example(1, "bash", "ptdit-build x.onnx   # needs full TensorRT")) == "needs full TensorRT"
    assert PAGES[0] == "README.md" and len(set(PAGES)) == len(PAGES)


def test_every_page_with_examples_runs_and_the_readme_stays_short():
    assert all((ROOT / page).is_file() for page in PAGES), [p for p in PAGES if not (ROOT / p).is_file()]
    left_out = [str(p.relative_to(ROOT)) for p in documentation()
                if examples(p.read_text()) and str(p.relative_to(ROOT)) not in PAGES]
    assert not left_out, f"pages with examples that PAGES does not run: {left_out}"
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the rest belongs in docs/"


def test_every_relative_link_leads_somewhere():
    assert slug("The step graph: `--step`") == "the-step-graph---step"
    broken = []
    for page in documentation():
        for line in outside_code(page.read_text()):
            for target in LINK.findall(line):
                if re.match(r"^[a-z]+:", target):
                    continue  # https:, mailto:
                file, _, anchor = target.partition("#")
                path = (page.parent / file).resolve() if file else page
                if not path.is_file() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
                    broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_readme_example(example: Example, folder: Path):
    reason = why_skipped(example)
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "HOME": str(folder), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    code = tiny(INSTALL.sub("", example.code) if example.kind == "bash" else example.code)
    command = ["bash", "-c", code] if example.kind == "bash" else [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (f"{example.page} line {example.line} failed (exit {result.returncode}):\n{code}\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

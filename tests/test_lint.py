"""The code stays as ruff checks it (pyproject.toml [tool.ruff]: line length 120, pycodestyle, pyflakes, import
order, bugbear): a finding fails the suite, with ruff's own lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], cwd=ROOT,
                            capture_output=True, text=True)
    assert "No module named ruff" not in result.stderr, "ruff is in the [test] extra: pip install -e '.[test]'"
    assert result.returncode == 0, result.stdout + result.stderr

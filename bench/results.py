"""Where ptdit-bench's results go: the table on stdout (or JSON with --json), each section into a --results file
with the machine it was measured on; and the group's console, for progress lines."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import click

from ptdit.contract.cli_types import Console
from ptdit.contract.files import write_atomically


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
                            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def publish(section: str, table: str, rows: Any, as_json: bool, path: Path | None) -> None:
    """The table on stdout, or with --json the results as JSON on stdout (and the table on stderr); with
    --results, the section also goes into that file."""
    if as_json:
        _console.line(table)
        click.echo(json.dumps({section: rows, "machine": machine()}, indent=2))
    else:
        click.echo(table)
    add_to_json(path, section, rows)


def add_to_json(path: Path | None, section: str, rows: Any) -> None:
    """Put one section's results (and the machine) into the JSON file at `path`, keeping its other sections."""
    if path is None:
        return
    data = json.loads(path.read_text()) if path.exists() else {}
    data[section] = rows
    data["machine"] = machine()
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))  # never left half written


_console = Console()  # set by the group's -q / -v


def set_console(console: Console) -> None:
    global _console
    _console = console


def report(line: str) -> None:
    _console.line(line)

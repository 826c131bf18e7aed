"""What the runtime's commands share: the check of an output path. (Their options are declared in
runtime/run_options.py; how they end is ptdit.contract.errors.exit_codes, as for every command.)"""

from __future__ import annotations

from pathlib import Path

from ptdit.contract.errors import InputError


def check_out(out_path: Path, suffixes: tuple[str, ...]) -> None:
    """--out ends in one of `suffixes` (whether it may be written: ptdit.contract.outputs, when it is claimed)."""
    if out_path.suffix not in suffixes:
        raise InputError(f"--out must end in {' or '.join(suffixes)}, got {out_path.name}")

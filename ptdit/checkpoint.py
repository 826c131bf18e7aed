"""Loading and saving PT-DiT weights (safetensors or torch .pt/.pth, optionally nested under a key)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn

from .contract.errors import InputError, option
from .contract.files import file_sha256

NESTING_KEYS = ("state_dict", "model", "module", "ema", "model_state_dict")
# Derived constants that may be absent from a checkpoint: they are recomputed from the config.
DERIVED_KEYS = ("pos_embed.pos_embed",)
_REPORT_LIMIT = 8


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 over the state dict (names and raw tensor bytes, in order): identifies weights with no file."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().view(torch.uint8).numpy())
    return digest.hexdigest()


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def read_state_dict(path: str | Path, key: str | None = None) -> dict[str, Tensor]:
    """Read a state dict from .safetensors / .pt / .pth / .bin. `key` selects a nested entry ("a.b" for
    deeper nesting); without it the usual wrappers (state_dict, model, module, ema) are unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign files raise many different types, with long messages
        # Only the exception type is shown: torch's own text spans several lines and advises weights_only=False,
        # which would run arbitrary code from an untrusted file.
        kind = "safetensors" if path.suffix == ".safetensors" else "torch (weights only)"
        raise InputError(f"checkpoint {path} is not a readable {kind} file ({type(e).__name__}); accepted: a "
                         f".safetensors file, or a torch .pt/.pth/.bin file holding tensors only") from None
    if key is not None:
        for part in key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                available = sorted(obj)[:_REPORT_LIMIT] if isinstance(obj, dict) else []
                raise InputError(f"checkpoint {path} has no entry '{key}' (top-level keys: {available})")
            obj = obj[part]
    else:
        while isinstance(obj, dict) and not _is_state_dict(obj):
            nested = [k for k in NESTING_KEYS if k in obj and isinstance(obj[k], dict)]
            if not nested:
                break
            obj = obj[nested[0]]
    if not _is_state_dict(obj):
        raise InputError(f"checkpoint {path} does not hold a state dict of tensors; if it is nested, pass the "
                         f"key that holds it (e.g. {option('checkpoint_key', 'state_dict')})")
    return obj  # type: ignore[return-value]


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_REPORT_LIMIT])
    return shown + (f", ... ({len(names) - _REPORT_LIMIT} more)" if len(names) > _REPORT_LIMIT else "")


def check_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Strict comparison of names and shapes; raises InputError with a report of every kind of mismatch."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and k not in DERIVED_KEYS)
    unexpected = sorted(k for k in state if k not in expected)
    misshaped = sorted(f"{k} {list(state[k].shape)} (model: {list(expected[k].shape)})"
                       for k in state if k in expected and state[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
    if misshaped:
        problems.append(f"{len(misshaped)} with the wrong shape: {_listing(misshaped)}")
    if problems:
        raise InputError("checkpoint does not match the model config (" + "; ".join(problems) +
                         f"); check {option('preset')}/{option('config')} against the checkpoint")


def without_wrapper_prefix(state: dict[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """The state dict with a prefix that a training wrapper put around every key removed ("module.",
    "predictor.", "model.module." ...), when that is what makes the names the model's; otherwise as it is."""
    names = list(state)
    while names and not expected & set(names):
        first = names[0].split(".", 1)[0] + "."
        if not all(n.startswith(first) and len(n) > len(first) for n in names):
            return state
        names = [n[len(first):] for n in names]
    if not expected & set(names):
        return state
    return dict(zip(names, state.values()))


def load_checkpoint(model: nn.Module, path: str | Path, key: str | None = None) -> str:
    """Load weights with strict name and shape checking; returns the checkpoint's sha256."""
    state = without_wrapper_prefix(read_state_dict(path, key), set(model.state_dict()))
    check_state_dict(model, state)
    for k in DERIVED_KEYS:
        if k not in state:
            state[k] = model.state_dict()[k]
    model.load_state_dict(state, strict=True)
    sha = file_sha256(path)
    model.weights_source = f"checkpoint {Path(path).name} (sha256 {sha[:12]})"  # type: ignore[assignment]
    return sha


def save_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Save the state dict; .safetensors by suffix, otherwise torch.save."""
    path = Path(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, str(path))

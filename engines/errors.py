"""Errors of the engines stage (it imports no other stage, so it has its own)."""


class InputError(ValueError):
    """Bad input or environment (missing TensorRT, no GPU, wrong file, conflicting options): exit code 2."""


class BuildError(RuntimeError):
    """TensorRT could not parse or build the network: exit code 1."""

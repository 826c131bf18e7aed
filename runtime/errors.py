"""Errors of the runtime stage (it imports no other stage, so it has its own)."""


class InputError(ValueError):
    """Bad input: wrong shapes or dtypes, missing or foreign files, a backend that is not installed, a plan
    built for another TensorRT or GPU. Exit code 2."""


class RuntimeFailure(RuntimeError):
    """The backend failed while running (a CUDA call, an engine execution). Exit code 1."""

"""The runtime stage's own failure; bad input is ptdit.contract.errors.InputError, as in every stage."""

from ptdit.contract.errors import Failure


class RuntimeFailure(Failure):
    """The backend failed while running (a CUDA call, an engine execution): exit code 1."""

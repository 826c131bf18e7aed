"""The engines stage's own failure; bad input is ptdit.contract.errors.InputError, as in every stage."""

from ptdit.contract.errors import Failure


class BuildError(Failure):
    """TensorRT could not parse or build the network: exit code 1."""

"""The one exception type for bad user input raised by ptdit (CLIs turn it into exit code 2)."""


class InputError(ValueError):
    """Unsupported resolution, invalid config, mismatched checkpoint...: the message names the fix."""

"""Error types. A ``VaekitError`` is a user error: the CLI prints its message on one line and
exits with status 2, without a traceback. Anything else is an internal error and keeps its
traceback."""


class VaekitError(Exception):
    """A problem with the user's input that the user can fix; the message says how."""


class DataError(VaekitError):
    """Data that cannot be loaded or does not fit the model (path, format, shape, support)."""


class ConfigError(VaekitError):
    """An unknown option or config key, or an invalid value."""


class CheckpointError(VaekitError):
    """A run directory or checkpoint that is missing, corrupt, untrusted or incompatible."""

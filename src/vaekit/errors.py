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


class TrainingDiverged(VaekitError):
    """The loss or its gradients stayed non-finite; the last good checkpoint is kept."""


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint. Not an error: the CLI
    prints the message (where the checkpoint is, how to resume) and exits with 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

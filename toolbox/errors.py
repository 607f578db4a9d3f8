"""Errors that end a command with one clear line and a defined exit code.

Anything raised as a ToolboxError is shown to the user as its message alone (the traceback only
with --debug); everything else is a bug and keeps its traceback.
"""


class ToolboxError(Exception):
    """A failure the user can act on. ``exit_code`` 2 = bad usage, 1 = the run failed."""

    exit_code = 1


class UsageError(ToolboxError):
    """Bad input: unknown name, malformed recipe, bad option value, missing file the user names."""

    exit_code = 2


class RunError(ToolboxError):
    """The command was well formed but the work failed (NaN loss, corrupt checkpoint, network...)."""

    exit_code = 1


class DatasetMissing(UsageError):
    """A dataset is not on disk and could not be downloaded; the message says where to put what."""


class CheckpointError(RunError):
    """A checkpoint or model artifact is missing, corrupt, truncated or does not match."""


class NonFiniteLoss(RunError):
    """Training produced NaN/inf; the last good checkpoint is kept for --resume."""

"""The errors a user of crate_edu reads as one line, and the helper that makes a message one line.

The command line (:mod:`crate_edu.cli`) prints each of these as ``crate-edu CMD: error: ...`` and
exits with status 2; in Python they are ordinary exceptions whose ``str`` is that line. Errors that
belong to one subsystem live beside it (``crate_edu.data.DatasetUnavailableError``,
``crate_edu.weights.CheckpointError``, ...); the two here are shared by the trainer, the
device and precision choice (:mod:`crate_edu.device`) and the command line.
"""

from __future__ import annotations

__all__ = ["ConfigError", "TrainingDivergedError", "first_line", "one_line"]


class ConfigError(ValueError):
    """A bad value in a run configuration; ``str(err)`` is one line naming the valid choices."""


class TrainingDivergedError(RuntimeError):
    """The training loss (or the test loss) became NaN or infinite, so the run was stopped.

    ``str(err)`` is one line: the epoch and step, the value, what to change, and where the last good
    checkpoint is. The epoch that diverged is neither saved nor logged: ``checkpoint.pt`` and
    ``metrics.jsonl`` keep the last good epoch (or do not exist, if it was the first).
    """


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (runs of whitespace, newlines included, become one space)."""
    return " ".join(str(exc).split())


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its class name: for
    messages from other libraries whose later lines are a traceback or a dump."""
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split())[:200] if text else type(exc).__name__

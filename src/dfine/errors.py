"""User-facing errors.

Anything the user can fix (a missing image, a malformed annotation file, a checkpoint of another model) raises a
:class:`DFineError` whose message is one line naming the file and the problem. The command line prints that line and
exits with status 2; tracebacks are for bugs, not for bad input.
"""

from __future__ import annotations

from pathlib import Path


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors
    that wrap a library's multi-line message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class DFineError(Exception):
    """An error caused by the user's input, with a one-line message that says what to fix."""


class InputFileError(DFineError):
    """A file given by the user is missing, unreadable or malformed."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CheckpointError(DFineError):
    """A checkpoint or config that does not describe a D-FINE model we can load."""


class ConfigError(DFineError):
    """An invalid configuration value or an unknown preset name."""


class ModelInputError(DFineError, ValueError):
    """A ``forward`` argument with a wrong value or shape."""


class ModelInputTypeError(DFineError, TypeError):
    """A ``forward`` argument of a wrong type."""


class UnsupportedFeatureError(DFineError, ValueError):
    """A transformers feature this implementation does not provide."""


class DatasetError(DFineError):
    """A data set with problems that cannot be repaired automatically.

    ``problems`` lists every problem found (one line each), so the user can fix them all in one pass.
    """

    def __init__(self, summary: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        message = summary
        if self.problems:
            shown = self.problems[:20]
            more = len(self.problems) - len(shown)
            message += "\n  " + "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")
        super().__init__(message)

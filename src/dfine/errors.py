"""User-facing errors.

Anything the user can fix (a missing image, a malformed annotation file, a checkpoint of another model) raises a
:class:`DFineError` whose message is one line naming the file and the problem. The command line prints that line and
exits with status 2; tracebacks are for bugs, not for bad input.
"""

from __future__ import annotations

from pathlib import Path

# PyTorch's DataLoader re-raises an error of a worker process in the main process as ``type(error)(message)``,
# the message being "Caught <type> in DataLoader worker process <n>.\nOriginal Traceback ..." with the whole
# traceback in it (torch.utils._utils.ExceptionWrapper.reraise).
_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):\n"


def _original_message(message: str, error_type: type) -> str:
    """The message of the error a worker raised, taken back out of the traceback PyTorch puts in its place.

    The traceback ends with ``module.ClassName: <message>`` (the message may span several lines); the last such line
    is the error raised (earlier ones are errors it was raised from).
    """
    name = error_type.__qualname__
    if error_type.__module__ not in ("builtins", "__main__"):
        name = f"{error_type.__module__}.{name}"
    lines = message.rstrip("\n").splitlines()
    for i in range(len(lines) - 1, 0, -1):
        if lines[i].startswith(f"{name}: "):
            return "\n".join([lines[i][len(name) + 2:], *lines[i + 1:]])
        if lines[i] == name:  # raised without a message
            return ""
    return lines[-1]


def _unwrap_worker_message(message: str, error_type: type) -> str:
    if message.startswith("Caught ") and _WORKER_TRACEBACK in message:
        return _original_message(message, error_type)
    return message


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors
    that wrap a library's multi-line message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class DFineError(Exception):
    """An error caused by the user's input, with a one-line message that says what to fix.

    Every subclass can be built from a single message, as PyTorch's DataLoader rebuilds an error raised in a worker
    process; that message (a traceback) is shortened to the original one, so the user still sees one line.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_unwrap_worker_message(args[0], type(self)),)
        super().__init__(*args)


class InputFileError(DFineError):
    """A file given by the user is missing, unreadable or malformed."""

    def __init__(self, path: str | Path, problem: str | None = None) -> None:
        if problem is None:
            # Rebuilt from a whole message (by the DataLoader, see DFineError): "<path>: <problem>".
            message = _unwrap_worker_message(str(path), type(self))
            path, _, problem = message.partition(": ")
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if problem else self.path)


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
        if problems is None and _WORKER_TRACEBACK in summary:
            # Rebuilt from the message (by the DataLoader, see DFineError): the summary, then "  <problem>" lines.
            summary, *lines = _unwrap_worker_message(summary, type(self)).split("\n  ")
            problems = [line for line in lines if not (line.startswith("... and ") and line.endswith(" more"))]
        self.problems = list(problems or [])
        message = summary
        if self.problems:
            shown = self.problems[:20]
            more = len(self.problems) - len(shown)
            message += "\n  " + "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")
        super().__init__(message)

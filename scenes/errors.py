"""One exception type for bad input: the CLI prints it as one line and exits 1."""

from __future__ import annotations

from pathlib import Path


class ReconError(Exception):
    """A user-facing error: what went wrong with which file, in one line.

    Raise it with the offending path so the message always names the file:
    ``raise ReconError(path, "pose matrix has non-finite values")``.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)

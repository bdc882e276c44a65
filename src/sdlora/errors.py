"""The one exception type for mistakes a user can fix (bad paths, bad data, impossible options).

``train.py`` catches :class:`SdloraError` and prints its message alone (no traceback) with a non-zero exit code;
any other exception reaching the top is a bug in sdlora.
"""

from __future__ import annotations


class SdloraError(Exception):
    """A problem with the user's input, explained in a message that names the option or file and what to do."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)

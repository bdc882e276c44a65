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


class ResumableError(SdloraError):
    """A run stopped by a problem found during training; ``state_path`` is the training state to continue from, when
    one was saved (the message then says how to resume)."""

    state_path = None  # pathlib.Path | None
    resume_hint = "continues from there"

    def __str__(self) -> str:
        text = super().__str__()
        if self.state_path is None:
            return text
        path = self.state_path
        return f"{text}\nThe last good training state is {path}: resume={path} {self.resume_hint}."


class NonFiniteLoss(ResumableError):
    """The loss of a batch is NaN or infinite (the message names the step, the images and likely causes)."""

    resume_hint = (
        "continues from there (with trainer.skip_nonfinite=true, or a lower learning rate and "
        "resume_allow_changes=true)"
    )


class NonFiniteWeights(ResumableError):
    """An optimizer step left NaN or infinite values in the LoRA weights (the message names the step or the file and
    likely causes); nothing with those values is ever written."""

    resume_hint = "continues from there (with a lower lr or another optimizer.eps, and resume_allow_changes=true)"


class DiskFull(ResumableError):
    """No space left on the device while writing a file (nothing partial is left behind)."""

    resume_hint = "continues from there once there is space"

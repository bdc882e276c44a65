"""What a run produced, in one place: the callbacks record into it, :func:`sdlora.run.train` reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class BestLoRAFile:
    """``<name>-best.<ext>`` (``save.best_by``): the file, the step it is of, the metric and its value there."""

    path: Path
    step: int
    metric: str
    value: float

    def to_json(self) -> dict:
        return {"path": str(self.path), "step": self.step, "metric": self.metric, "value": self.value}


@dataclass
class RunResults:
    files: list[Path] = field(default_factory=list)  # LoRA files of this run still on disk, in the order saved
    states: list[Path] = field(default_factory=list)  # training state folders of this run still on disk
    interrupted: Path | None = None  # what a signal's stop left to continue from: the state, else the LoRA so far
    stopped_by: int | None = None  # the signal that stopped the run after a step (sdlora.signals)
    best: BestLoRAFile | None = None  # <name>-best: the LoRA with the lowest save.best_by value so far

    def file_saved(self, path: Path) -> None:
        if path not in self.files:
            self.files.append(path)

    def file_removed(self, path: Path) -> None:
        if path in self.files:
            self.files.remove(path)

    def state_saved(self, path: Path) -> None:
        if path not in self.states:
            self.states.append(path)

    def state_removed(self, path: Path) -> None:
        if path in self.states:
            self.states.remove(path)

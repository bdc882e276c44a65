"""kohya's ``loss/average``: the mean of the last ``window`` micro-batch losses (a ring buffer)."""

from __future__ import annotations

import math


class RunningMean:
    """Moving mean over the last ``window`` values (kohya uses the number of batches per epoch).

    The sum is kept as values enter and leave the window, so an update costs O(1) whatever the window (a window of
    100k batches must not cost 100k additions per step); it is recomputed exactly once per window against rounding
    drift."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("window must be ≥ 1")
        self.window = window
        self.values: list[float] = []
        self.position = 0
        self._total = 0.0

    def update(self, value: float) -> float:
        if len(self.values) < self.window:
            self.values.append(value)
            self._total += value
        else:
            self._total += value - self.values[self.position]
            self.values[self.position] = value
        self.position = (self.position + 1) % self.window
        if self.position == 0 or not math.isfinite(self._total):
            self._total = math.fsum(self.values)
        return self.mean

    @property
    def mean(self) -> float:
        return self._total / len(self.values) if self.values else float("nan")

    def state_dict(self) -> dict:
        return {"window": self.window, "values": list(self.values), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.window, self.values, self.position = state["window"], list(state["values"]), state["position"]
        self._total = math.fsum(self.values)

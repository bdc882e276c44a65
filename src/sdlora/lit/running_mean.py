"""kohya's ``loss/average``: the mean of the last ``window`` micro-batch losses (a ring buffer)."""

from __future__ import annotations


class RunningMean:
    """Moving mean over the last ``window`` values (kohya uses the number of batches per epoch)."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("window must be ≥ 1")
        self.window = window
        self.values: list[float] = []
        self.position = 0

    def update(self, value: float) -> float:
        if len(self.values) < self.window:
            self.values.append(value)
        else:
            self.values[self.position] = value
        self.position = (self.position + 1) % self.window
        return self.mean

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else float("nan")

    def state_dict(self) -> dict:
        return {"window": self.window, "values": list(self.values), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.window, self.values, self.position = state["window"], list(state["values"]), state["position"]

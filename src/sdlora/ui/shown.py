"""What the Training tab shows, kept per browser session on the server (a ``gr.State``).

A field's change sends only its own value; the check needs all of them. Sending every field with every keystroke
(about 200 inputs) cost the page most of a second per change, so the server keeps the shown values here: a field's
change updates its slot and checks the whole form; the events that fill the whole form (a group menu, an import,
opening a run's settings) replace all slots; Plan and Start, which read every field, replace them too.

The changes of one session may arrive at once (typing in one field while the check of another runs): the lock makes
each "update a slot, then check" one step, so the last answer always checks the latest values.
"""

from __future__ import annotations

import copy
import threading
from typing import Any


class ShownForm:
    """The values of the form's fields (in ``Form.fields`` order) and the run folder field."""

    def __init__(self, values: list[Any], run_dir: str) -> None:
        self.values = list(values)
        self.run_dir = run_dir
        self.lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> ShownForm:
        """Gradio copies a state's initial value for each new session: the copy gets its own lock."""
        return ShownForm(copy.deepcopy(self.values, memo), self.run_dir)

    def set_field(self, index: int, value: Any) -> bool:
        """Put ``value`` in slot ``index``; False when it held that value already (a form refill's echo)."""
        if self.values[index] == value:
            return False
        self.values[index] = value
        return True

    def set_run_dir(self, run_dir: str) -> bool:
        if self.run_dir == run_dir:
            return False
        self.run_dir = run_dir
        return True

    def replace(self, values: list[Any], run_dir: str | None = None) -> None:
        self.values = list(values)
        if run_dir is not None:
            self.run_dir = run_dir

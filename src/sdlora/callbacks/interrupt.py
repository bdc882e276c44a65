"""Ctrl-C that stops training at the next optimizer step instead of in the middle of one.

The first SIGINT only sets :attr:`GracefulInterrupt.requested`; the saving callback then writes a LoRA file and a
training state after the current step and stops the run. A second SIGINT raises ``KeyboardInterrupt`` at once (no
state). The handler is installed only in the main thread and removed when training ends.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger("sdlora")


class GracefulInterrupt:
    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        self._installed = False

    def install(self) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.signal(signal.SIGINT, self._handle)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self.uninstall()
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after this optimizer step with a saved state (Ctrl-C again stops at once)")

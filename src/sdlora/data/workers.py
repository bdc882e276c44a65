"""DataLoader worker processes (``data.num_workers``) that stay quiet when the training process is killed.

A killed training process (``kill -9``, the kernel's out-of-memory killer) leaves its workers to notice and exit on
their own (torch's worker loop watches its parent). A worker that was handing a batch's shared-memory file descriptors
to it at that moment has a ``multiprocessing.resource_sharer`` thread whose connection breaks; that thread reports the
error through ``sys.excepthook``: a traceback on the terminal for something the machine did. :func:`quiet_worker`,
the loaders' ``worker_init_fn``, makes that one report silent — a connection error raised in the resource sharer,
whose only peer is the training process — and leaves every other exception to the previous hook.
"""

from __future__ import annotations

import sys
import traceback
from types import TracebackType

_SHARER = "multiprocessing/resource_sharer.py"


def peer_gone(kind: type[BaseException], tb: TracebackType | None) -> bool:
    """Whether an exception is the resource sharer's broken connection to a process that is gone."""
    if not issubclass(kind, ConnectionError | EOFError):
        return False
    return any(frame.filename.replace("\\", "/").endswith(_SHARER) for frame in traceback.extract_tb(tb))


def quiet_worker(worker_id: int) -> None:
    """``worker_init_fn``: silence the resource sharer's report of a training process that is gone."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if not peer_gone(kind, tb):
            previous(kind, value, tb)

    sys.excepthook = hook

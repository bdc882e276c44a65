"""A DataLoader worker stays quiet when the training process is killed (:mod:`sdlora.data.workers`): the
multiprocessing resource sharer's broken connection is not reported; every other exception is. The whole path — a
SIGKILL'd ``train.py`` with two workers — is tests/integration/test_faults.py."""

from __future__ import annotations

import sys

from sdlora.data.workers import peer_gone, quiet_worker

SHARER = "/usr/lib/python3.11/multiprocessing/resource_sharer.py"
DATASET = "/work/sdlora/data/dataset.py"


def _raised_in(filename: str, error: BaseException):
    """(type, value, traceback) of ``error`` raised by code whose frames carry the file name ``filename``."""
    namespace: dict = {}
    exec(compile("def serve(error):\n    raise error\n", filename, "exec"), namespace)
    try:
        namespace["serve"](error)
    except BaseException:
        return sys.exc_info()
    raise AssertionError("not raised")


def _is_peer_gone(filename: str, error: BaseException) -> bool:
    kind, _, tb = _raised_in(filename, error)
    return peer_gone(kind, tb)


def test_only_the_resource_sharers_broken_connection_is_recognised():
    assert _is_peer_gone(SHARER, ConnectionResetError(104, "reset"))
    assert _is_peer_gone(SHARER, BrokenPipeError())
    assert _is_peer_gone(SHARER, EOFError())
    assert not _is_peer_gone(SHARER, ValueError("a bug"))
    assert not _is_peer_gone(DATASET, ConnectionResetError())


def test_the_worker_hook_keeps_every_other_report(monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: reported.append(kind))
    quiet_worker(0)
    sys.excepthook(*_raised_in(SHARER, ConnectionResetError(104, "reset")))
    sys.excepthook(*_raised_in(DATASET, OSError("disk")))
    sys.excepthook(*_raised_in(SHARER, KeyError("x")))
    assert reported == [OSError, KeyError]

"""``run_python``: run ``python <argv>`` as a separate process, the way a user does — started from a pre-imported
zygote (``tests/helpers/zygote.py``) when it can be, so that the suite's ~100 ``train.py`` runs do not each pay the
~6 s of importing torch, Lightning, diffusers and transformers.

The child is still a process of its own (own pid, session, environment, working directory and standard streams; it
leaves through the interpreter's normal exit), so exit codes, output and tracebacks are the command's. What it shares
with its siblings is only what the imports did. A real ``subprocess.run`` is used instead when fork is unavailable,
when ``SDLORA_TEST_ZYGOTE=0``, or when the environment asked for differs from the zygote's in a variable the imported
libraries read at import time (thread counts, CUDA, torch, Hugging Face and Python settings). Tests that need the
interpreter's own start (the import boundary, ``-X`` options) or a process they signal while it runs start it with
:mod:`subprocess` themselves.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Read by libraries while they are imported: a child that needs another value than the zygote's must start afresh.
IMPORT_TIME_ENV = ("OMP_", "MKL_", "OPENBLAS_", "KMP_", "CUDA_", "TORCH", "PYTORCH_", "HF_", "TRANSFORMERS_",
                   "DIFFUSERS_", "PYTHON", "LD_", "TOKENIZERS_")  # fmt: skip


class Zygote:
    """One pre-imported server per test process, started on first use and closed at exit; thread-safe (a reader
    thread hands each answer to the run waiting for it)."""

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "helpers" / "zygote.py")], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=self.env,
        )  # fmt: skip
        self.answers: dict[int, queue.Queue] = {0: queue.Queue()}
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        threading.Thread(target=self._dispatch, name="zygote-answers", daemon=True).start()
        try:
            self.ready = self.answers[0].get(timeout=300).get("ready", False)
        except queue.Empty:
            self.ready = False
        if not self.ready:
            self.process.kill()

    def _dispatch(self) -> None:
        for line in self.process.stdout:
            answer = json.loads(line)
            self.answers[answer.get("id", 0)].put(answer)
        for waiting in list(self.answers.values()):  # the zygote ended: wake whoever waits
            waiting.put({"ended": True})

    def accepts(self, env: Mapping[str, str]) -> bool:
        changed = {key for key in set(env) | set(self.env) if env.get(key) != self.env.get(key)}
        alive = self.ready and self.process.poll() is None
        return alive and not any(key.startswith(IMPORT_TIME_ENV) for key in changed)

    def run(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="zygote-") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            with self.lock:
                number = next(self.ids)
                answers = self.answers[number] = queue.Queue()
                request = {"id": number, "argv": list(argv), "cwd": str(cwd), "env": dict(env), "stdout": str(out),
                           "stderr": str(err)}  # fmt: skip
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
            try:
                pid = self._answer(answers, 60)["pid"]
                try:
                    returncode = self._answer(answers, timeout)["returncode"]
                except queue.Empty:
                    os.killpg(pid, signal.SIGKILL)
                    self._answer(answers, 60)
                    raise subprocess.TimeoutExpired(argv, timeout, _text(out), _text(err)) from None
            finally:
                del self.answers[number]
            return subprocess.CompletedProcess([sys.executable, *argv], returncode, _text(out), _text(err))

    @staticmethod
    def _answer(answers: queue.Queue, timeout: float) -> dict:
        answer = answers.get(timeout=timeout)
        if answer.get("ended"):
            raise RuntimeError("the test zygote ended while a command ran")
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


_zygote: Zygote | None = None
_starting = threading.Lock()


def _shared_zygote() -> Zygote | None:
    global _zygote
    if os.environ.get("SDLORA_TEST_ZYGOTE", "1") == "0" or not hasattr(os, "fork"):
        return None
    with _starting:
        if _zygote is None:
            _zygote = Zygote()
            atexit.register(_zygote.close)
            if not _zygote.ready:
                warnings.warn("the test zygote did not start: commands start afresh (slower)", stacklevel=3)
    return _zygote


def run_python(
    argv: Sequence[str], cwd: Path = ROOT, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python <argv>`` in ``cwd`` with ``os.environ`` updated by ``env``; output captured as text (like
    ``subprocess.run(..., capture_output=True, text=True)``)."""
    full_env = {**os.environ, **(env or {})}
    zygote = _shared_zygote()
    if zygote is not None and zygote.accepts(full_env):
        return zygote.run(argv, Path(cwd), full_env, timeout)
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip

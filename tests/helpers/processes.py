"""``run_python``: run ``python <argv>`` as a separate process, the way a user does — started from a pre-imported
zygote (``tests/helpers/zygote.py``) when it can be, so that the suite's ~100 ``train.py`` runs do not each pay the
~6 s of importing torch, Lightning, diffusers and transformers.

The child is still a process of its own (own pid, session, environment, working directory and standard streams; it
leaves through the interpreter's normal exit), so exit codes, output and tracebacks are the command's. What it shares
with its siblings is only what the imports did. A real ``subprocess.run`` is used instead off Linux,
when ``SDLORA_TEST_ZYGOTE=0``, or when the environment asked for differs from the zygote's in a variable the imported
libraries read at import time (thread counts, CUDA, torch, Hugging Face and Python settings). ``start_python`` is the
background form (a :class:`subprocess.Popen` look-alike the tests signal while it trains). Tests that need the
interpreter's own start (the import boundary, ``-X`` options) use :mod:`subprocess` themselves.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.helpers.config import ROOT

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
            waiting = self.answers.get(answer.get("id", 0))
            if waiting is not None:  # None: a run that gave up waiting for its fork
                waiting.put(answer)
        for waiting in list(self.answers.values()):  # the zygote ended: wake whoever waits
            waiting.put({"ended": True})

    def accepts(self, env: Mapping[str, str]) -> bool:
        changed = {key for key in set(env) | set(self.env) if env.get(key) != self.env.get(key)}
        alive = self.ready and self.process.poll() is None
        return alive and not any(key.startswith(IMPORT_TIME_ENV) for key in changed)

    def start(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], merge_stderr: bool) -> ForkedProcess:
        """Fork ``python <argv>``; its output goes to files in a private folder (stderr into stdout's file when
        ``merge_stderr``)."""
        folder = Path(tempfile.mkdtemp(prefix="zygote-"))
        out, err = folder / "stdout", folder / ("stdout" if merge_stderr else "stderr")
        out.touch()  # readable before the child opens it
        with self.lock:
            number = next(self.ids)
            answers = self.answers[number] = queue.Queue()
            request = {"id": number, "argv": list(argv), "cwd": str(cwd), "env": dict(env), "stdout": str(out),
                       "stderr": str(err)}  # fmt: skip
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        try:
            pid = _answer(answers, 60)["pid"]
        except BaseException:
            del self.answers[number]
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return ForkedProcess([sys.executable, *argv], pid, answers, out, err, lambda: self.answers.pop(number, None))

    def run(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        process = self.start(argv, cwd, env, merge_stderr=False)
        try:
            returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill_group()
            process.wait(60)
            raise subprocess.TimeoutExpired(argv, timeout, _text(process.out), _text(process.err)) from None
        finally:
            process.stdout.close()
        return subprocess.CompletedProcess(process.args, returncode, _text(process.out), _text(process.err))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


class ForkedProcess:
    """What :class:`subprocess.Popen` offers the tests, for a child of the zygote (which is its parent and reports
    its end): ``pid``, ``returncode``, ``poll``, ``wait``, ``send_signal``/``terminate``/``kill`` (to the child
    alone), ``communicate`` and ``stdout`` (text, read from its output file while it runs)."""

    def __init__(self, args: list[str], pid: int, answers: queue.Queue, out: Path, err: Path, done) -> None:
        self.args, self.pid, self.out, self.err = args, pid, out, err
        self._answers, self._done = answers, done
        self.returncode: int | None = None
        self.stdout = open(out, encoding="utf-8", errors="replace")  # noqa: SIM115  (read while it runs)
        weakref.finalize(self, shutil.rmtree, out.parent, True)

    def poll(self) -> int | None:
        if self.returncode is None:
            with contextlib.suppress(queue.Empty):
                self._finish(_answer(self._answers, None, block=False))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            try:
                self._finish(_answer(self._answers, timeout))
            except queue.Empty:
                raise subprocess.TimeoutExpired(self.args, timeout) from None
        return self.returncode

    def _finish(self, answer: dict) -> None:
        self.returncode = answer["returncode"]
        self._done()

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def kill_group(self) -> None:
        """SIGKILL to the child and every process it started (its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        """Its output once it has ended and so have the processes it started (which write to the same file), as
        reading a pipe to its end waits for every writer."""
        self.wait(timeout)
        deadline = time.monotonic() + (timeout or 60)
        while time.monotonic() < deadline:
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        return self.stdout.read(), None


def _answer(answers: queue.Queue, timeout: float | None, block: bool = True) -> dict:
    answer = answers.get(block=block, timeout=timeout)
    if answer.get("ended"):
        raise RuntimeError("the test zygote ended while a command ran")
    return answer


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


_zygote: Zygote | None = None
_starting = threading.Lock()


def _shared_zygote() -> Zygote | None:
    global _zygote
    if os.environ.get("SDLORA_TEST_ZYGOTE", "1") == "0" or not sys.platform.startswith("linux"):
        return None  # macOS: forking after some system frameworks are loaded is not safe; Windows: no fork
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


def start_python(
    argv: Sequence[str], cwd: Path = ROOT, env: Mapping[str, str] | None = None
) -> subprocess.Popen | ForkedProcess:
    """``python <argv>`` in the background, stderr merged into a text ``stdout`` (like ``subprocess.Popen(...,
    stdout=PIPE, stderr=STDOUT, text=True)``); forked from the zygote under the same conditions as
    :func:`run_python`."""
    full_env = {**os.environ, **(env or {})}
    zygote = _shared_zygote()
    if zygote is not None and zygote.accepts(full_env):
        return zygote.start(argv, Path(cwd), full_env, merge_stderr=True)
    return subprocess.Popen([sys.executable, *argv], cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip

"""Starting and stopping sdlora's own commands from the page: ``python train.py <validated overrides>`` in a run
folder of its own, and the ``sdlora-*`` tools. Argument lists, never a shell; each process in a session of its own,
so that a run goes on when the browser (or the server) goes away; its output goes to ``console.log`` in the run
folder (Hydra's ``train.log`` holds the log).

"Stop" sends SIGINT — Ctrl-C —, so the run stops after the current optimizer step with its LoRA and training state
saved (:mod:`sdlora.signals`). A run started by an earlier server is found by the process id in its ``summary.json``,
and signalled only if that process is this run's ``train.py`` (its command line names the run folder).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.sweep.record import read_record

CONSOLE = "console.log"


class Launcher:
    """The processes this server started, by run folder; ``project``: the folder holding ``train.py``."""

    def __init__(self, project: Path) -> None:
        self.project = Path(project).resolve()
        self.train_py = self.project / "train.py"
        self._processes: dict[Path, subprocess.Popen] = {}
        self._lock = threading.Lock()

    @staticmethod
    def new_run_dir(pattern: str, base: Path) -> Path:
        """A run folder that does not exist yet: ``pattern`` with Hydra's ``${now:FORMAT}`` filled in."""
        now = datetime.now()
        text = re.sub(r"\$\{now:([^}]*)\}", lambda m: now.strftime(m.group(1)), pattern)
        path = Path(text).expanduser()
        path = (path if path.is_absolute() else base / path).resolve()
        candidate, n = path, 1
        while candidate.exists() and any(candidate.iterdir()):
            n += 1
            candidate = path.with_name(f"{path.name}_{n}")
        return candidate

    def start(self, overrides: list[str], run_dir: Path) -> subprocess.Popen:
        """``python train.py <overrides> hydra.run.dir=<run_dir>`` in the background."""
        run_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, str(self.train_py), *overrides, f"hydra.run.dir={run_dir}"]
        with open(run_dir / CONSOLE, "ab") as console:
            process = subprocess.Popen(argv, cwd=self.project, stdin=subprocess.DEVNULL, stdout=console,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        with self._lock:
            self._processes[run_dir.resolve()] = process
        threading.Thread(target=process.wait, daemon=True).start()  # reaped when it ends
        return process

    def alive(self, run_dir: Path) -> bool | None:
        """Whether the run's process is running (None: not started here and no record to tell)."""
        process = self._processes.get(Path(run_dir).resolve())
        if process is not None:
            return process.poll() is None
        pid = self._recorded_pid(run_dir)
        return None if pid is None else True

    def _recorded_pid(self, run_dir: Path) -> int | None:
        """The process id in the run's record, if that process is this run's ``train.py``, still running."""
        record = read_record(run_dir) or {}
        pid = record.get("pid")
        if record.get("status") != "running" or not isinstance(pid, int):
            return None
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        words = [w.decode(errors="replace") for w in command]
        mine = any(w.endswith("train.py") for w in words) and f"hydra.run.dir={Path(run_dir).resolve()}" in words
        return pid if mine else None

    def stop(self, run_dir: Path) -> str:
        """Ctrl-C for the run: it stops after the current step with its LoRA and state saved."""
        run_dir = Path(run_dir).resolve()
        process = self._processes.get(run_dir)
        pid = process.pid if process is not None and process.poll() is None else self._recorded_pid(run_dir)
        if pid is None:
            raise SdloraError(f"{run_dir} has no running training process to stop")
        os.kill(pid, signal.SIGINT)
        return f"Sent Ctrl-C to the run in {run_dir}: it stops after the current step and saves its LoRA and state"

    def tool(self, module: str, argv: list[str]) -> subprocess.Popen:
        """``python -m <sdlora tool module> <argv>`` with its output readable line by line."""
        if not re.fullmatch(r"sdlora\.tools\.\w+", module):
            raise SdloraError(f"{module} is not one of sdlora's tools")
        code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
        return subprocess.Popen([sys.executable, "-c", code, *argv], cwd=self.project, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip

"""The tests' ``run_python`` (``tests/helpers/processes.py``): a command forked from the pre-imported zygote behaves
as ``python <argv>`` started afresh — exit status, streams, traceback, directory, environment, ``__main__`` — and a
run past its timeout is killed with what it started."""

from __future__ import annotations

import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import processes
from tests.helpers.processes import run_python, start_python

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote forks on Linux only")

SCRIPT = """
import os, sys
here = os.path.dirname(os.path.abspath(__file__))
print(sys.argv[1:], os.getcwd(), os.environ.get("SDLORA_PROBE"), __name__, sys.path[0] == here,
      "torch" in sys.modules, "sdlora" in sys.modules, sep="|")
print("err", file=sys.stderr)
if sys.argv[1:] == ["fail"]:
    raise ValueError("boom")
if sys.argv[1:] == ["code"]:
    raise SystemExit(7)
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "probe.py"
    path.write_text(SCRIPT, encoding="utf-8")
    return path


def fresh(argv: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, *argv], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True)


@pytest.mark.parametrize("args", [["a", "b"], ["fail"], ["code"]])
def test_a_forked_command_is_the_same_as_a_fresh_interpreter(script, tmp_path, args):
    zygote = processes._shared_zygote()
    assert zygote is not None and zygote.ready
    env = {"SDLORA_PROBE": "x"}
    forked = run_python([str(script), *args], cwd=tmp_path, env=env, timeout=60)
    started = fresh([str(script), *args], tmp_path, env)
    assert forked.returncode == started.returncode
    assert forked.stderr.splitlines()[:1] == started.stderr.splitlines()[:1] == ["err"]
    assert forked.stderr.splitlines()[-1:] == started.stderr.splitlines()[-1:]  # the same last line of a traceback
    out = forked.stdout.strip().split("|")
    assert out[:5] == started.stdout.strip().split("|")[:5]  # argv, cwd, environment, __main__, sys.path[0]
    assert out[5:] == ["True", "False"]  # torch was imported before the fork, nothing of sdlora


def test_modules_run_with_dash_m(tmp_path):
    forked = run_python(["-m", "json.tool", "--help"], cwd=tmp_path, timeout=60)
    assert forked.returncode == 0 and "usage:" in forked.stdout


def test_a_command_past_its_timeout_is_killed(tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        run_python([str(_sleeper(tmp_path))], cwd=tmp_path, timeout=1)


def test_commands_from_several_threads_get_their_own_answers(script, tmp_path):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: run_python([str(script), str(n)], cwd=tmp_path, timeout=60), range(8)))
    assert [r.stdout.split("|")[0] for r in results] == [f"['{n}']" for n in range(8)]


def test_an_environment_read_at_import_time_starts_a_fresh_interpreter(script, tmp_path):
    zygote = processes._shared_zygote()
    assert not zygote.accepts({**zygote.env, "OMP_NUM_THREADS": "7"})
    assert not zygote.accepts({**zygote.env, "PYTHONPATH": str(tmp_path)})
    assert zygote.accepts({**zygote.env, "SDLORA_JOB_GPUS": "1"})
    result = run_python([str(script)], cwd=tmp_path, env={"OMP_NUM_THREADS": "7"}, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().split("|")[5] == "False"  # a fresh one: no torch


def _sleeper(folder: Path) -> Path:
    path = folder / "sleep.py"
    path.write_text("import time\ntime.sleep(60)\n", encoding="utf-8")
    return path


WAITER = """
import pathlib, sys, time
print("started", flush=True)
print("to stderr", file=sys.stderr, flush=True)
pathlib.Path(sys.argv[1]).touch()
time.sleep(60)
"""


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_background_command_takes_signals_as_a_fresh_interpreter(tmp_path, number):
    """``start_python`` as ``Popen(stdout=PIPE, stderr=STDOUT, text=True)``: both streams in ``stdout``; SIGINT is a
    KeyboardInterrupt (traceback, then the interpreter ends by the signal), SIGTERM ends it at once."""
    import os
    import time

    if number == signal.SIGINT and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        pytest.skip("SIGINT is ignored in this test run (a shell without job control started it in the background): "
                    "every interpreter it starts ignores SIGINT too")  # fmt: skip
    script = tmp_path / "waiter.py"
    script.write_text(WAITER, encoding="utf-8")
    results = []
    for name, start in (
        ("forked", lambda ready: start_python([str(script), str(ready)], cwd=tmp_path)),
        ("fresh", lambda ready: subprocess.Popen([sys.executable, str(script), str(ready)], cwd=tmp_path,
                                                 env=os.environ.copy(), stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT, text=True)),
    ):  # fmt: skip
        ready = tmp_path / f"{name}.ready"
        process = start(ready)
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), f"the {name} interpreter never ran the script"  # a signal before it would be lost
        process.send_signal(number)
        output, _ = process.communicate(timeout=60)
        results.append((process.returncode, output.splitlines()[:2], output.splitlines()[-1:]))
    assert results[0] == results[1]
    assert results[0][1] == ["started", "to stderr"] and results[0][0] == -number

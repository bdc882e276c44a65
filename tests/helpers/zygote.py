"""A Python process that has imported the heavy libraries once and forks a fresh child for each command the tests run.

``python tests/helpers/zygote.py`` imports torch, Lightning, diffusers, transformers, Hydra and the rest of what a
``python train.py`` run imports (about 6 s on a small machine), answers ``{"ready": true}`` and then reads JSON
requests from stdin, one a line: ``{"id", "argv", "cwd", "env", "stdout", "stderr"}``, where ``argv`` is what would
follow ``python`` on a command line (``["train.py", "model=tiny", ...]`` or ``["-m", "sdlora.tools.migrate", ...]``)
and ``stdout``/``stderr`` are file paths. For each it forks; the child takes a session of its own, points its standard
streams at those files (stdin at ``/dev/null``), moves to ``cwd``, replaces its environment and runs the script or
module as ``__main__`` exactly as the interpreter would: an uncaught exception prints its traceback and exits 1,
``SystemExit`` gives the exit status, atexit handlers and non-daemon threads run at the end because the child leaves
through the interpreter's normal exit. The zygote answers ``{"id", "pid"}`` once a child has started and ``{"id",
"returncode"}`` (negative: killed by that signal, as :mod:`subprocess` says it) once it has ended; several children may
run at once. Closing stdin ends the zygote.

Nothing of sdlora is imported before the fork, so each child runs the repository's code fresh; only the third-party
imports are shared. Only the main thread exists when it forks (checked). The preloaded objects are frozen
(``gc.freeze``) before the first fork: otherwise each child's garbage collections — the one at exit above all, about
1 s — walk them all and copy-on-write copies every page they touch. ``tests/helpers/processes.py`` is the client.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import runpy
import select
import sys
import threading

# What `python train.py` imports (measured with -X importtime), heaviest first; a missing optional one is skipped.
PRELOAD = (
    "torch",
    "lightning.pytorch",
    "diffusers",
    "diffusers.models.unets.unet_2d_condition",
    "diffusers.models.autoencoders.autoencoder_kl",
    "diffusers.schedulers",
    "transformers",
    "transformers.models.clip.modeling_clip",
    "transformers.models.clip.tokenization_clip",
    "lycoris",
    "safetensors.torch",
    "tensorboard",
    "torch.utils.tensorboard",
    "hydra",
    "hydra.utils",
    "omegaconf",
    "PIL.Image",
    "numpy",
    "tqdm.auto",
)


def preload() -> None:
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    extra = [thread.name for thread in threading.enumerate() if thread is not threading.main_thread()]
    if extra:  # forking a process with other threads could copy a held lock into the child
        raise SystemExit(f"zygote: threads running after the imports: {extra}")


def reply(message: dict) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def read_requests(pending: bytes) -> tuple[list[dict] | None, bytes]:
    """The whole JSON lines one ``os.read`` of stdin completes (``None`` at its end) and the rest of a line.
    ``os.read``, not ``sys.stdin``: ``select`` does not see what Python's buffer already holds."""
    chunk = os.read(0, 65536)
    if not chunk:
        return None, b""
    *lines, rest = (pending + chunk).split(b"\n")
    return [json.loads(line) for line in lines if line.strip()], rest


def serve() -> dict:
    """Fork a child per request, several at a time; returns only in a child, with its request."""
    children: dict[int, object] = {}  # pid -> request id
    pending = b""
    reply({"ready": True})
    while True:
        readable, _, _ = select.select([0], [], [], 0.05 if children else None)
        if readable:
            batch, pending = read_requests(pending)
            if batch is None:
                raise SystemExit(0)
            for request in batch:
                pid = os.fork()
                if pid == 0:
                    return request
                children[pid] = request["id"]
                reply({"id": request["id"], "pid": pid})
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            reply({"id": children.pop(pid), "returncode": os.waitstatus_to_exitcode(status)})


def become(request: dict) -> None:
    """Turn this forked child into ``python <argv>`` started with the request's directory, environment and streams."""
    os.setsid()  # its own process group: a timeout kills it with everything it started
    stdin = os.open(os.devnull, os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    merged = request["stderr"] == request["stdout"]  # one file, one offset: as stderr=STDOUT
    stderr = stdout if merged else os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in enumerate((stdin, stdout, stderr)):
        os.dup2(target, fd)
    for target in {stdin, stdout, stderr} - {0, 1, 2}:
        os.close(target)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv = list(request["argv"])
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    preload()
    gc.freeze()  # the preloaded objects are never collected: a child's collections do not touch (and copy) them
    become(serve())

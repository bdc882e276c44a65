"""Atomic file writes: write a temporary file in the same folder, then ``os.replace`` it over the target.

A crash or kill mid-write leaves either the previous file or nothing under the final name, never a half file. The
temporary names are hidden (``.<name>.tmp-<pid>``); what a killed process left behind is removed by the next run in
that folder (:func:`clean_leftovers`). A full disk is one readable error naming the file (:class:`DiskFull`), with
the temporary file removed. Files get the mode ``open()`` would give them (the umask), whatever the writer used.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from sdlora.errors import DiskFull

log = logging.getLogger("sdlora")

#: Hidden names of unfinished writes and deletions: ``.<name>.tmp-<pid>``, ``.old-<pid>``, ``.removing-<pid>``.
LEFTOVER = re.compile(r"^\..+\.(?:tmp|old|removing)-(\d+)$")


def _default_file_mode() -> int:
    """0o666 minus the process umask: the mode ``open()`` would give a new file (some writers use 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _disk_full(exc: OSError, path: Path) -> DiskFull:
    where = Path(path).parent
    try:
        free = shutil.disk_usage(where).free // (1 << 20)
    except OSError:
        free = 0
    return DiskFull(f"no space left on the device of {where} while writing {Path(path).name} ({free} MB free); "
                    "nothing partial was left behind: free some space and run again")  # fmt: skip


@contextlib.contextmanager
def _disk_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(exc, path) from None
        raise
    except RuntimeError as exc:  # torch.save / safetensors report a failed write as a RuntimeError
        text = str(exc)
        if "No space left on device" in text or ("unexpected pos" in text and _nearly_full(path.parent)):
            raise _disk_full(OSError(errno.ENOSPC, text), path) from None
        raise


def _nearly_full(folder: Path) -> bool:
    usage = shutil.disk_usage(folder)
    return usage.free < min(100 << 20, usage.total // 100)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with _disk_errors(path):
            yield tmp
            os.chmod(tmp, _default_file_mode())
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def readable_json(value: object, levels: int = 4, _depth: int = 0) -> str:
    """JSON indented by two spaces for its first ``levels`` levels of containers; deeper values on one line each (a
    data plan's images: one line per image). ``json.dumps(indent=...)`` runs the pure-Python encoder over every value
    (about 0.6 s for 100k images); one-line values go through the C encoder, which halves that."""
    if _depth >= levels or not isinstance(value, dict | list) or not value:
        return json.dumps(value, ensure_ascii=False)
    pad, end = "  " * (_depth + 1), "  " * _depth
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {readable_json(v, levels, _depth + 1)}"
                 for k, v in value.items()]  # fmt: skip
        return "{\n" + ",\n".join(items) + f"\n{end}}}"
    items = [pad + readable_json(v, levels, _depth + 1) for v in value]
    return "[\n" + ",\n".join(items) + f"\n{end}]"


def atomic_write_json(path: str | Path, data: object) -> Path:
    return atomic_write_text(path, readable_json(data) + "\n")


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it takes the place of ``path`` (a previous folder
    of that name is removed only after the new one is in place), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        with _disk_errors(path):
            yield tmp
            mode = _default_file_mode()
            for child in tmp.iterdir():
                os.chmod(child, mode)
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(folder: str | Path) -> list[Path]:
    """Remove the hidden leftovers of writes and deletions that a killed process did not finish in ``folder`` (not
    recursive; only those whose process is gone). Returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = LEFTOVER.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    if removed:
        log.info("Removed %d unfinished file(s) a stopped run left in %s", len(removed), folder)
    return removed


def low_space_warning(folder: str | Path, needed: int, what: str) -> str | None:
    """A warning when the device of ``folder`` has less than twice ``needed`` bytes free (before ``what`` is written);
    None when there is room."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if free >= 2 * needed:
        return None
    return (f"only {free // (1 << 20)} MB free on the device of {folder}; {what} needs about {needed // (1 << 20)} MB: "
            "free some space before the next save")  # fmt: skip

"""What the web server may touch and who may use it.

- **Folders.** The server reads and writes only under the folders it was started with (``--root``, by default the
  current folder). Every value that names a path — in the overrides of a run, a tool's arguments, a file the page
  shows — must lie under one of them (after resolving ``..`` and symbolic links); a value that is not a path on disk
  and looks like a Hugging Face hub id (``org/name``) is left to the model checks.
- **Commands.** It starts ``python train.py`` and sdlora's own tools (the ``sdlora-*`` console scripts), as argument
  lists without a shell; a path in the page is shown, never executed.
- **Binding.** It listens on 127.0.0.1 unless ``--listen`` is given, and ``--listen`` needs ``--auth user:password``
  (or ``--auth-file``): a training server on a network without a password would let anyone run code-heavy jobs and
  read its folders.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdlora.errors import SdloraError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_EXTENSION = re.compile(r"^\.[A-Za-z0-9]+$")  # .txt, .caption


@dataclass(frozen=True)
class Roots:
    """The folders the server may read and write (resolved absolute paths)."""

    folders: tuple[Path, ...]
    base: Path  # relative paths are relative to this (the folder train.py runs in)

    @classmethod
    def of(cls, folders: Iterable[str | Path], base: str | Path) -> Roots:
        base = Path(base).resolve()
        resolved = tuple(dict.fromkeys(Path(f).expanduser().resolve() for f in folders)) or (base,)
        return cls(resolved, base)

    def path(self, value: str | Path) -> Path:
        """``value`` as an absolute path (relative to :attr:`base`)."""
        path = Path(value).expanduser()
        return (path if path.is_absolute() else self.base / path).resolve()

    def allows(self, value: str | Path) -> bool:
        path = self.path(value)
        return any(path == root or root in path.parents for root in self.folders)

    def check(self, value: str | Path, what: str) -> Path:
        """``value`` resolved, or an :class:`SdloraError` when it lies outside the folders."""
        if not self.allows(value):
            raise SdloraError(f"{what}={str(value)!r} is outside the folders this server may use ({self.describe()})")
        return self.path(value)

    def describe(self) -> str:
        return ", ".join(str(f) for f in self.folders) + " — start sdlora-ui with --root <folder> to add one"


def looks_like_path(text: str) -> bool:
    """Whether a string value names a file or folder (rather than a number, a name or a class)."""
    return (
        "/" in text
        or "\\" in text
        or text.startswith(("~", "."))
        or text.endswith((".safetensors", ".ckpt", ".pt", ".txt", ".toml", ".json", ".yaml"))
    )


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def path_problems(roots: Roots, values: dict[str, Any]) -> dict[str, list[str]]:
    """By key: the path values (also inside lists and dicts, e.g. ``data.subsets``) that lie outside the roots.
    Class names (``_target_``), and hub ids and file extensions (``data.caption_extension=.txt``) that name nothing
    on disk, are not paths."""
    problems: dict[str, list[str]] = {}
    for key, value in values.items():
        if key.endswith("_target_"):
            continue
        for text in _strings(value):
            if not looks_like_path(text) or "${" in text:
                continue
            if (_HUB_ID.match(text) or _EXTENSION.match(text)) and not roots.path(text).exists():
                continue
            if not roots.allows(text):
                problems.setdefault(key, []).append(
                    f"{key}: {text!r} is outside the folders this server may use ({roots.describe()})"
                )
    return problems


def parse_auth(auth: str | None, auth_file: str | None) -> list[tuple[str, str]] | None:
    """``user:password`` pairs from ``--auth`` (comma-separated) and/or ``--auth-file`` (one per line)."""
    entries = [a for a in (auth or "").split(",") if a.strip()]
    if auth_file:
        lines = Path(auth_file).expanduser().read_text(encoding="utf-8").splitlines()
        entries += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    pairs = []
    for entry in entries:
        user, sep, password = entry.strip().partition(":")
        if not sep or not user or not password:
            raise SdloraError("--auth takes user:password (and --auth-file one user:password per line)")
        pairs.append((user, password))
    return pairs or None


def check_binding(listen: bool, auth: list[tuple[str, str]] | None, share: bool) -> None:
    """Refuse to listen beyond this machine (or make a public share link) without a password."""
    if (listen or share) and not auth:
        what = "--share" if share else "--listen"
        raise SdloraError(
            f"{what} makes the page reachable from other machines: give --auth user:password (or --auth-file FILE) "
            "so that only you can start runs and read your folders"
        )

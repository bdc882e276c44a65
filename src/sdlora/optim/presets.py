"""The shipped optimizer presets (``conf/optimizer/*.yaml``), for checks that need no torch.

Checking an optimizer node means building it on a stand-in parameter (:mod:`sdlora.optim.checks`), which imports
torch and ``torch._dynamo`` (about 2 s). The shipped presets are known to build — the test suite builds every one
(``tests/unit/test_config.py``) — so a node equal to a preset, apart from ``lr`` (checked by value: every optimizer
takes any positive finite lr), is accepted without that build, and checking a config or ``dry_run=true`` imports no
torch (docs/design.md §7). Any other node (a changed or added argument, ``optimizer=custom``) is built as before.
When the repository's ``conf/`` folder cannot be found every node is built.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

UNCHECKED_KEYS = ("lr",)  # checked by value (optim.factory.check_optimizer), not by building


def conf_folder() -> Path | None:
    """The repository's ``conf/`` folder beside the package (``src/sdlora/…`` → ``conf/``), if it exists."""
    folder = Path(__file__).resolve().parents[3] / "conf"
    return folder if folder.is_dir() else None


@cache
def _texts(group: str) -> tuple[tuple[Path, str], ...]:
    """The files of ``conf/<group>/`` and their text (read once)."""
    folder = conf_folder()
    if folder is None or not (folder / group).is_dir():
        return ()
    return tuple((path, path.read_text(encoding="utf-8")) for path in sorted((folder / group).glob("*.yaml")))


@cache
def _parsed(path: Path) -> dict[str, Any] | None:
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return node if isinstance(node, dict) and node.get("_target_") not in (None, "???") else None


def presets(group: str, target: str | None = None) -> tuple[dict[str, Any], ...]:
    """The plain nodes of ``conf/<group>/*.yaml`` with a concrete ``_target_`` (``custom`` has none); with ``target``
    only the files that name it are parsed (OmegaConf's YAML parser is slow: 25 files took 30 ms of a config check)."""
    nodes = (_parsed(path) for path, text in _texts(group) if target is None or str(target) in text)
    return tuple(node for node in nodes if node is not None and (target is None or node["_target_"] == target))


def _comparable(node: Any, ignore: tuple[str, ...]) -> dict[str, Any]:
    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    return {str(k): v for k, v in plain.items() if k not in ignore}


def is_shipped_preset(node: Any, group: str = "optimizer", ignore: tuple[str, ...] = UNCHECKED_KEYS) -> bool:
    """Whether ``node`` (composed or plain) equals a shipped preset of ``group`` apart from the keys ``ignore``."""
    try:
        wanted = _comparable(node, ignore)
    except Exception:  # an unresolvable interpolation: the full check reports it
        return False
    target = wanted.get("_target_")
    if not isinstance(target, str):
        return False
    return any(_comparable(preset, ignore) == wanted for preset in presets(group, target))

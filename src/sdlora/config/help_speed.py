"""``python train.py --help`` without the deep copies of Hydra's group listing (docs/performance.md, "Start-up").

Hydra's help page lists every config group and its options; for each of its look-ups (131 for sdlora's ``conf/``)
``ConfigLoaderImpl.get_group_options`` builds a new caching repository, deep-copying the whole config repository (the
config store with sdlora's typed schemas included): about 2 s of a 2.6 s ``--help``. Those look-ups all pass no
config name and no overrides, so one repository serves them all; ``train.py`` makes them share it, for ``--help`` and
``--hydra-help`` only (composing a config is untouched). When Hydra's private method is not there (another Hydra
version), nothing is changed and help is only slower.
"""

from __future__ import annotations

import sys
from typing import Any

HELP_FLAGS = ("--help", "-h", "--hydra-help")


def share_help_repository(argv: list[str] | None = None) -> bool:
    """Make the help page's group look-ups share one config repository when ``argv`` asks for help; returns whether
    it did."""
    if not any(flag in (sys.argv[1:] if argv is None else argv) for flag in HELP_FLAGS):
        return False
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
    except ImportError:
        return False
    original = getattr(ConfigLoaderImpl, "_parse_overrides_and_create_caching_repo", None)
    if original is None or getattr(original, "_sdlora_shared", False):
        return False
    shared: dict[int, Any] = {}

    def parse_and_share(self: Any, config_name: str | None, overrides: list[str]) -> Any:
        if config_name is not None or overrides:
            return original(self, config_name, overrides)
        if id(self) not in shared:
            shared[id(self)] = original(self, config_name, overrides)
        return shared[id(self)]

    parse_and_share._sdlora_shared = True  # type: ignore[attr-defined]
    ConfigLoaderImpl._parse_overrides_and_create_caching_repo = parse_and_share  # type: ignore[method-assign]
    return True

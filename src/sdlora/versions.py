"""``--version`` [kohya_ss: the GUI's version line]: sdlora's version and the versions of the libraries that decide
what a run does, read from the installed packages' metadata (no heavy import)."""

from __future__ import annotations

import platform

from sdlora import __version__

LIBRARIES = ("torch", "lightning", "diffusers", "transformers", "hydra-core", "lycoris-lora")


def version_text() -> str:
    """``sdlora 0.1.0 (torch 2.5.1, lightning 2.5.0, …; Python 3.11.2)``."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in LIBRARIES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return f"sdlora {__version__} ({', '.join(found)}; Python {platform.python_version()})"

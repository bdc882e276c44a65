"""Constructor keyword arguments from the shipped config folders, so tests build the same tiny models as sdlora."""

from __future__ import annotations

import json

from sdlora.models.configs import config_dir


def shipped_kwargs(name: str, component: str) -> dict:
    """``config_dir(name)/<component>/config.json`` without diffusers' private ``_*`` keys."""
    config = json.loads((config_dir(name) / component / "config.json").read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}

"""The ``model=`` presets in one table: each preset's family adapter, architecture and display name.

Everything that lists presets derives from here — the shipped config folders (:mod:`sdlora.models.configs`), the
tools' ``--model`` choices and family lookup (:mod:`sdlora.tools.cli`, :mod:`sdlora.tools.families`), checkpoint
detection and the wrong-family message (:mod:`sdlora.tools.checkpoint`, :mod:`sdlora.models.sources`). Pure Python,
so a tool's ``--help`` imports it without torch. ``conf/model/<name>.yaml`` holds the same ``_target_`` (a test checks).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """One ``model=`` preset. ``kind``: the architecture (single-file key layout) — ``sd1``, ``sd2`` or ``sdxl``;
    ``tiny``: a test model built from its shipped config with random weights."""

    name: str
    family_class: str
    kind: str
    display: str
    tiny: bool = False


PRESETS: tuple[Preset, ...] = (
    Preset("sd15", "sdlora.models.sd15.SD15Family", "sd1", "SD 1.x"),
    Preset("sd2", "sdlora.models.sd2.SD2Family", "sd2", "SD 2.x"),
    Preset("sd2_v", "sdlora.models.sd2.SD2VFamily", "sd2", "SD 2.x-v"),
    Preset("sdxl", "sdlora.models.sdxl.SDXLFamily", "sdxl", "SDXL"),
    Preset("tiny", "sdlora.models.tiny.TinySD15Family", "sd1", "tiny", tiny=True),
    Preset("tiny_sd2_v", "sdlora.models.tiny.TinySD2VFamily", "sd2", "tiny SD 2.x-v", tiny=True),
    Preset("tiny_sdxl", "sdlora.models.tiny.TinySDXLFamily", "sdxl", "tiny SDXL", tiny=True),
)
#: Preset names, real models first (the order of ``--model`` choices and of detection).
MODEL_NAMES: tuple[str, ...] = tuple(p.name for p in PRESETS)
#: Preset → family adapter class (the ``_target_`` of ``conf/model/<name>.yaml``).
FAMILY_CLASSES: dict[str, str] = {p.name: p.family_class for p in PRESETS}
#: Preset → architecture (tiny models are shaped like, and carry the metadata of, a real family).
KIND: dict[str, str] = {p.name: p.kind for p in PRESETS}
#: Preset → name for messages ("an SDXL LoRA").
DISPLAY: dict[str, str] = {p.name: p.display for p in PRESETS}
TINY: tuple[str, ...] = tuple(p.name for p in PRESETS if p.tiny)
#: Architecture → name for messages.
KIND_NAMES: dict[str, str] = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


def presets_of(kind: str, tiny: bool | None = None) -> tuple[str, ...]:
    """The presets of an architecture (real ones first); ``tiny``: only tiny (True) or only real (False) ones."""
    return tuple(p.name for p in PRESETS if p.kind == kind and (tiny is None or p.tiny == tiny))

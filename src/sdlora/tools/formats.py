"""LoRA files in the formats other trainers write, read into kohya's names (for verify, fix and convert).

A file's tensors are grouped by module: kohya keys (``<name>.lora_down.weight`` …, or any LyCORIS tensor after the
first dot), or diffusers/PEFT keys (``unet.<path>.lora_A.weight`` = lora_down, ``….lora_B.weight`` = lora_up,
optionally ``.alpha``; alphas may also sit in diffusers' ``lora_adapter_metadata``). Each module name is matched
against the targets of a model family (:class:`sdlora.tools.names.NameIndex`, tensor shapes deciding between text
encoders and families): the first preset that holds every module wins. What had to be renamed is recorded, so
verify can name each problem and fix can write a kohya copy.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from sdlora.models.presets import MODEL_NAMES
from sdlora.tools.families import fits, hinted, model_from_metadata

_PEFT = re.compile(r"^(?P<module>.+?)\.(?P<role>lora_[AB])(?:\.default)?\.weight$")
_PEFT_ALPHA = re.compile(r"^(?P<module>.+\..+)\.alpha$")
ROLE = {"lora_A": "lora_down.weight", "lora_B": "lora_up.weight"}
ADAPTER_METADATA = "lora_adapter_metadata"


@dataclass
class Entry:
    """One module of a file: its name there, its tensors by role (``lora_down.weight``, ``alpha``, ``hada_w1_a`` …)."""

    source: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    peft: bool = False

    @property
    def is_lora(self) -> bool:
        return "lora_down.weight" in self.tensors and "lora_up.weight" in self.tensors


def group(tensors: dict[str, torch.Tensor]) -> dict[str, Entry]:
    """Tensors by module (see the module docstring); PEFT roles become kohya's."""
    entries: dict[str, Entry] = {}
    for key, value in tensors.items():
        match = _PEFT.match(key)
        if match:
            entry = entries.setdefault(match["module"], Entry(match["module"], peft=True))
            entry.tensors[ROLE[match["role"]]] = value
            continue
        match = _PEFT_ALPHA.match(key)
        if match and "." in match["module"].split(".", 1)[1]:  # a dotted path: PEFT with an alpha tensor
            entries.setdefault(match["module"], Entry(match["module"], peft=True)).tensors["alpha"] = value
            continue
        module, _, role = key.partition(".")
        entries.setdefault(module, Entry(module)).tensors[role or "weight"] = value
    return entries


def adapter_alphas(metadata: dict[str, str], entries: dict[str, Entry]) -> dict[str, float]:
    """Per PEFT module, the alpha diffusers' ``lora_adapter_metadata`` gives it (its lora_alpha / alpha_pattern)."""
    raw = metadata.get(ADAPTER_METADATA)
    if not raw:
        return {}
    config = json.loads(raw)
    out: dict[str, float] = {}
    for name, entry in entries.items():
        component, _, path = name.partition(".")
        alpha = config.get(f"{component}.lora_alpha")
        for pattern, value in (config.get(f"{component}.alpha_pattern") or {}).items():
            if re.match(rf"(.*\.)?({pattern.lstrip('^')})$", path):
                alpha = value
                break
        if alpha is not None and entry.peft:
            out[name] = float(alpha)
    return out


@functools.cache
def name_index(model: str):
    """:class:`~sdlora.tools.names.NameIndex` over every module of ``model``'s shipped config (meta device)."""
    from sdlora.tools.families import component_name, family, meta_components
    from sdlora.tools.names import NameIndex, all_module_names

    unet, encoders = meta_components(model)
    roots = {component_name(i): te for i, te in enumerate(encoders)} | {"unet": unet}
    return NameIndex(all_module_names(family(model), roots))


def _shape_check(entry: Entry):
    if not entry.is_lora:
        return None
    down, up = entry.tensors["lora_down.weight"].shape, entry.tensors["lora_up.weight"].shape
    return lambda module: hasattr(module, "weight") and fits(down, up, module.weight.shape)


def resolve(entries: dict[str, Entry], model: str) -> dict[str, str]:
    """Module name in the file → kohya name, for the modules ``model`` has (the others are left out)."""
    index = name_index(model)
    out: dict[str, str] = {}
    for name, entry in entries.items():
        kohya = index.resolve(name, _shape_check(entry))
        if kohya is not None:
            out[name] = kohya
    return out


def identify(entries: dict[str, Entry], metadata: dict[str, str], model: str | None = None) -> tuple[str, dict]:
    """(preset, name mapping) of the family that resolves the most modules (all, normally); ``model`` forces one."""
    if model is not None:
        return model, resolve(entries, model)
    order = hinted(MODEL_NAMES, model_from_metadata(metadata))
    best: tuple[str, dict] | None = None
    for candidate in order:
        mapping = resolve(entries, candidate)
        if len(mapping) == len(entries) and len(set(mapping.values())) == len(mapping):
            return candidate, mapping
        if best is None or len(mapping) > len(best[1]):
            best = (candidate, mapping)
    assert best is not None
    return best


@dataclass
class Normalized:
    """A file read into kohya's names: the family, the modules (kohya name → Entry), what was renamed and what is
    unknown."""

    model: str
    modules: dict[str, Entry]
    renamed: dict[str, str]
    unknown: list[str]
    metadata: dict[str, str]
    peft: bool


def normalize(tensors: dict[str, torch.Tensor], metadata: dict[str, str], model: str | None = None) -> Normalized:
    """Group, identify the family and rename (see the module docstring); PEFT alphas come from the file's alpha
    tensors or its adapter metadata (else none: scale 1 is then written as alpha = rank)."""
    entries = group(tensors)
    found, mapping = identify(entries, metadata, model)
    alphas = adapter_alphas(metadata, entries)
    modules: dict[str, Entry] = {}
    for name, entry in entries.items():
        if name in mapping:
            if name in alphas and "alpha" not in entry.tensors:
                entry.tensors["alpha"] = torch.tensor(alphas[name])
            modules[mapping[name]] = entry
    renamed = {n: k for n, k in mapping.items() if n != k}
    unknown = sorted(set(entries) - set(mapping))
    return Normalized(found, modules, renamed, unknown, dict(metadata), any(e.peft for e in entries.values()))


def rename_kind(source: str, kohya: str, model: str) -> str:
    """Why a name was renamed, for messages."""
    if source.startswith(("unet.", "text_encoder", "base_model.")):
        return "diffusers/PEFT keys"
    if source.startswith("lycoris_"):
        return "lycoris-lora's 'lycoris_' names"
    if source.startswith("lora_unet_") and "xl" in model:
        return "SDXL U-Net keys with diffusers names (kohya uses the SGM names input_blocks/middle_block/output_blocks)"
    if source.startswith("lora_te") and "text_model" not in source:
        return "text-encoder keys without 'text_model_' (A1111 and ComfyUI need it)"
    return "other names"


def describe(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else str(value)

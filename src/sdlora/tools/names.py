"""kohya names of *every* module of a model (LyCORIS also adapts norms, embeddings and other layers), and the
translation of other trainers' module names into kohya's.

kohya's name of a module is ``<prefix>_<path with "." → "_">`` where the path is the module's path in kohya's model:
diffusers paths for SD1/2 U-Nets, SGM (``input_blocks…``) paths for SDXL's, and text-encoder paths under
``text_model.`` (:mod:`sdlora.network.naming`). Other trainers write the same modules as ``lycoris_<diffusers path>``
(lycoris-lora's own wrapper), ``lora_unet_<diffusers path>`` for SDXL, ``lora_te1_encoder_…`` without ``text_model_``,
or PEFT keys (``unet.<path>``, ``text_encoder.<path>``). :class:`NameIndex` finds the kohya name for all of them from
the flattened path, using the component and the tensor shapes where a path exists in two text encoders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from sdlora.network.naming import text_encoder_name


@dataclass(frozen=True)
class Module:
    """A module of the model: its pipeline component, its path in that component and the module itself."""

    component: str
    path: str
    module: nn.Module


def flat(path: str) -> str:
    return path.replace(".", "_")


def _te_name(prefix: str, path: str) -> str:
    """kohya's text-encoder name; modules outside the text model (OpenCLIP's ``text_projection``) keep their path."""
    if path.startswith("text_projection"):
        return f"{prefix}_{flat(path)}"
    return text_encoder_name(prefix, path)


def all_module_names(fam: Any, roots: Mapping[str, nn.Module]) -> dict[str, Module]:
    """kohya name → :class:`Module` for every named module with parameters of ``roots`` (component → module)."""
    table: dict[str, Module] = {}
    for component, root in roots.items():
        if component == "unet":
            namer = fam.unet_namer(root)
        else:
            index = 0 if component == "text_encoder" else int(component.rsplit("_", 1)[1]) - 1
            prefix = fam.te_prefixes[index]
            namer = lambda path, prefix=prefix: _te_name(prefix, path)  # noqa: E731
        for path, module in root.named_modules():
            if not path or not any(True for _ in module.parameters(recurse=False)):
                continue
            try:
                name = namer(path)
            except ValueError:  # a module kohya's model has no name for
                continue
            table.setdefault(name, Module(component, path, module))
    return table


_PEFT_PREFIXES = {"unet.": "unet", "text_encoder.": "text_encoder", "text_encoder_2.": "text_encoder_2"}
_KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                   "lora_te2_": "text_encoder_2"}  # fmt: skip


class NameIndex:
    """Finds kohya names for module names written by other trainers (see the module docstring)."""

    def __init__(self, table: Mapping[str, Module]) -> None:
        self.table = dict(table)
        self.by_flat: dict[str, list[str]] = {}
        for name, module in table.items():
            for key in {flat(module.path), flat(module.path.removeprefix("text_model."))}:
                self.by_flat.setdefault(key, []).append(name)

    def candidates(self, foreign: str) -> list[str]:
        """kohya names ``foreign`` (a module name without tensor suffix) may stand for, best first."""
        if foreign in self.table:
            return [foreign]
        component, rest = None, foreign
        for prefix, comp in {**_PEFT_PREFIXES, **_KOHYA_PREFIXES}.items():
            if foreign.startswith(prefix):
                component, rest = comp, foreign[len(prefix) :]
                break
        else:
            for prefix in ("lycoris_", "base_model.model.", "lora_"):
                if foreign.startswith(prefix):
                    rest = foreign[len(prefix) :]
                    break
        key = flat(rest.removeprefix("text_model.")) if "." in rest else rest.removeprefix("text_model_")
        names = self.by_flat.get(key, []) + self.by_flat.get(flat(rest), [])
        names = list(dict.fromkeys(names))
        if component is not None and component != "text_encoder":
            names = [n for n in names if self.table[n].component == component] or names
        elif component == "text_encoder":  # SD1/2 "lora_te_" or SDXL's first encoder
            names = sorted(names, key=lambda n: self.table[n].component != "text_encoder")
        return names

    def resolve(self, foreign: str, shape_ok=None) -> str | None:
        """The kohya name for ``foreign``: the first candidate whose layer ``shape_ok(module)`` accepts."""
        for name in self.candidates(foreign):
            if shape_ok is None or shape_ok(self.table[name].module):
                return name
        return None

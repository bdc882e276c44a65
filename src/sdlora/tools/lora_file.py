"""A kohya-format LoRA file as the tools read and write it: modules (lora_down, lora_up, alpha) and metadata.

Reading reuses :mod:`sdlora.network.io` and the checks of :mod:`sdlora.network.weights`; a file that is missing, not
readable or not a kohya LoRA is a one-line error that names the option (and, for a LyCORIS or diffusers/PEFT file,
the tool that reads it). Writing casts to ``--save_precision`` (alpha included, as kohya) and goes through
:func:`sdlora.network.io.save_lora` (atomic, kohya's ``sshs_*`` hashes; ``.ckpt``/``.pt`` without metadata).
The tools' metadata follows kohya's tools (docs/tools.md): the minimum ``ss_*`` network keys plus
``modelspec.*``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdlora.errors import SdloraError
from sdlora.network.functional import delta_weight, lora_scale
from sdlora.tools.cli import LORA_SUFFIXES, existing_file

DOWN, UP, ALPHA = ".lora_down.weight", ".lora_up.weight", ".alpha"
NETWORK_MODULE = "networks.lora"


@dataclass
class LoraModule:
    """One module of a LoRA: ``ΔW = scale · up∘down``, scale = alpha/rank (alpha None: not in the file → rank)."""

    down: torch.Tensor  # [r, in] or [r, in, kh, kw]
    up: torch.Tensor  # [out, r] or [out, r, 1, 1]
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return lora_scale(self.alpha, self.rank)

    @property
    def effective_alpha(self) -> float:
        """The alpha kohya uses: the file's, or the rank when it has none (or 0)."""
        return self.scale * self.rank

    @property
    def is_conv(self) -> bool:
        """A k×k convolution with k > 1 (kohya's ``conv_dim`` modules)."""
        return self.down.dim() == 4 and tuple(self.down.shape[2:]) != (1, 1)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (int(self.up.shape[0]), *self.down.shape[1:])

    def delta(self, ratio: float = 1.0, device: str | torch.device | None = None) -> torch.Tensor:
        """ratio · ΔW in float32, shaped [out, in] or [out, in, kh, kw]."""
        up, down = self.up.to(device).float(), self.down.to(device).float()
        return delta_weight(up, down, ratio * self.scale, self.weight_shape)


@dataclass
class LoraFile:
    path: Path
    modules: dict[str, LoraModule]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.modules.values())).down.dtype

    def shapes(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        return {n: (tuple(m.down.shape), tuple(m.up.shape)) for n, m in self.modules.items()}


def key_format(keys: list[str]) -> str:
    """``kohya``, ``lycoris`` (LoHa/LoKr/… tensors), ``peft`` (``lora_A``/``lora_B``) or ``unknown``."""
    if any(k.endswith(DOWN) for k in keys):
        return "kohya"
    if any(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys):
        return "peft"
    if any(part in k for k in keys for part in (".hada_", ".lokr_", ".oft_", ".diff", ".w_norm", ".on_input")):
        return "lycoris"
    return "unknown"


_HINTS = {
    "lycoris": " — it is a LyCORIS file (LoHa, LoKr, …): merge it with sdlora-merge-lycoris",
    "peft": " — it has diffusers/PEFT keys: sdlora-convert-lora --to kohya (or sdlora-fix-lora) turns it into one",
}


def load_any_lora(value: str | Path, option: str = "lora") -> tuple[Path, dict[str, torch.Tensor], dict[str, str]]:
    """(path, tensors, metadata) of a LoRA file in any key format; one-line errors for a missing, unreadable or empty
    file."""
    from sdlora.network.io import load_lora

    path = existing_file(value, option, LORA_SUFFIXES)
    try:
        tensors, metadata = load_lora(path)
    except Exception as exc:
        raise SdloraError(f"{path} cannot be read as a {path.suffix} file ({str(exc).splitlines()[0][:200]})") from None
    if not tensors:
        raise SdloraError(f"{path} holds no tensors")
    return path, tensors, metadata


def read_lora(value: str | Path, option: str = "--model") -> LoraFile:
    """Read a kohya-format LoRA file (``.safetensors``/``.ckpt``/``.pt``); one-line errors for anything else."""
    from sdlora.config.schema import NetworkType
    from sdlora.network.io import load_lora
    from sdlora.network.weights import check_network_file

    path = existing_file(value, option, LORA_SUFFIXES)
    problem = check_network_file(str(path), NetworkType.lora, option)
    if problem and ", but network=lora writes" in problem:  # another type's file (LoHa, LoKr, …)
        problem = (problem.split(", but network=lora writes")[0] + ": this tool reads kohya LoRA/LoCon files "
                   "(LyCORIS files: sdlora-merge-lycoris)")  # fmt: skip
    if problem:
        hint = ""
        if "not a LoRA file" in problem:
            tensors, _ = load_lora(path)
            hint = _HINTS.get(key_format(list(tensors)), "")
        raise SdloraError(problem + hint)
    tensors, metadata = load_lora(path)
    modules: dict[str, LoraModule] = {}
    for key in sorted(k for k in tensors if k.endswith(DOWN)):
        name = key.removesuffix(DOWN)
        down, up = tensors[key], tensors[name + UP]
        if up.shape[1] != down.shape[0]:
            raise SdloraError(
                f"{option}={str(value)!r}: module {name} has lora_down of rank {down.shape[0]} but lora_up of rank "
                f"{up.shape[1]}; the file is damaged"
            )
        alpha = tensors.get(name + ALPHA)
        modules[name] = LoraModule(down, up, None if alpha is None else float(alpha.float().reshape(-1)[0]))
    return LoraFile(path, modules, dict(metadata))


def state_dict(modules: Mapping[str, LoraModule], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """kohya tensors of ``modules`` cast to ``dtype`` (alpha too; a missing alpha is written as the rank)."""
    out: dict[str, torch.Tensor] = {}
    for name, m in modules.items():
        target = dtype or m.down.dtype
        alpha = float(m.alpha) if m.alpha is not None else float(m.rank)
        out[name + DOWN] = m.down.detach().to("cpu", target).contiguous()
        out[name + UP] = m.up.detach().to("cpu", target).contiguous()
        out[name + ALPHA] = torch.tensor(alpha, dtype=target)
    return out


def write_lora(path: Path, modules: Mapping[str, LoraModule], metadata: Mapping[str, str], dtype=None) -> Path:
    """Write ``modules`` as a kohya LoRA (atomic; metadata only in .safetensors, as kohya)."""
    from sdlora.network.io import save_lora

    if not modules:
        raise SdloraError("nothing to write: the result has no LoRA modules")
    meta = {k: str(v) for k, v in metadata.items() if not k.startswith("sshs_")}
    return save_lora(path, state_dict(modules, dtype), meta if path.suffix == ".safetensors" else None)


def dim_alpha(modules: Mapping[str, LoraModule]) -> tuple[str, str, dict[str, str]]:
    """(ss_network_dim, ss_network_alpha, conv network_args) as kohya writes them: the Linear/1×1 modules' rank and
    alpha, or "Dynamic" when they differ; conv_dim/conv_alpha of the k×k modules when there are any."""

    def one(values: set) -> str:
        return str(values.pop()) if len(values) == 1 else "Dynamic"

    base = [m for m in modules.values() if not m.is_conv]
    conv = [m for m in modules.values() if m.is_conv]
    args: dict[str, str] = {}
    if conv:
        args = {"conv_dim": one({m.rank for m in conv}), "conv_alpha": one({m.effective_alpha for m in conv})}
    return one({m.rank for m in base}), one({m.effective_alpha for m in base}), args


def network_metadata(
    modules: Mapping[str, LoraModule], model: str | None, title: str, merged_from: list[str] | None = None, **extra: Any
) -> dict[str, str]:
    """kohya's minimum network metadata (``build_minimum_network_metadata``) plus ``modelspec.*`` for ``model``."""
    dim, alpha, args = dim_alpha(modules)
    meta: dict[str, str] = {
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": dim,
        "ss_network_alpha": alpha,
        "ss_network_args": json.dumps(args),
    }
    if model is not None:
        meta |= family_metadata(model, title, merged_from)
    meta |= {k: str(v) for k, v in extra.items()}
    return meta


def family_metadata(model: str, title: str, merged_from: list[str] | None = None) -> dict[str, str]:
    """``ss_v2``, ``ss_base_model_version`` and kohya's ``modelspec.*`` keys of a LoRA for the preset ``model``."""
    from sdlora.network.metadata import SAI_MODEL_SPEC
    from sdlora.tools.families import family

    fam = family(model)
    prediction = "v_prediction" if fam.default_v_parameterization else "epsilon"
    meta = {
        "ss_v2": str(fam.is_v2),
        "ss_base_model_version": fam.base_model_version_for(prediction),
        "modelspec.sai_model_spec": SAI_MODEL_SPEC,
        "modelspec.architecture": f"{fam.modelspec_architecture(prediction)}/lora",
        "modelspec.implementation": fam.modelspec_implementation,
        "modelspec.title": title,
        "modelspec.resolution": f"{fam.default_resolution}x{fam.default_resolution}",
        "modelspec.date": datetime.datetime.now().replace(microsecond=0).isoformat(),
        "modelspec.prediction_type": "v" if prediction == "v_prediction" else "epsilon",
    }
    if merged_from:
        meta["modelspec.merged_from"] = ", ".join(merged_from)
    return meta


def source_model(lora: LoraFile) -> str | None:
    """The preset a LoRA file was made for: its metadata, else the family whose targets hold all its modules."""
    from sdlora.tools.families import identify, model_from_metadata

    return model_from_metadata(lora.metadata) or identify(lora.shapes())


def title_of(path: Path) -> str:
    """kohya's modelspec title for a tool output: the file name without its suffix."""
    return Path(path).stem

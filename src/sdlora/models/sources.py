"""Where ``model.pretrained`` points, and which family a checkpoint belongs to — without loading any weights.

A value is a single-file checkpoint (A1111/CompVis/SGM ``.safetensors``/``.ckpt``), a local diffusers folder, or a
Hugging Face hub id (``org/name``). Single ``.safetensors`` files and diffusers folders are classified from their keys
or ``model_index.json`` so that choosing the wrong ``model=`` preset is a clear error instead of a shape mismatch deep
inside diffusers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.models.presets import KIND_NAMES, TINY, presets_of

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# first key prefix found in an original-format checkpoint → architecture kind
_SINGLE_FILE_MARKERS = (
    ("conditioner.embedders.1.", "sdxl"),
    ("cond_stage_model.model.", "sd2"),
    ("cond_stage_model.transformer.", "sd1"),
)


@dataclass(frozen=True)
class Source:
    kind: str  # "file" | "folder" | "hub"
    location: str


def resolve_source(value: str, option: str = "model.pretrained") -> Source:
    """Classify ``value``; a path that does not exist (and is no hub id) is an error naming ``option``."""
    path = Path(value).expanduser()
    if path.is_file():
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise SdloraError(
                f"{option}={value!r} is a file but not a checkpoint (expected {', '.join(CHECKPOINT_SUFFIXES)})"
            )
        return Source("file", str(path))
    if path.is_dir():
        return Source("folder", str(path))
    looks_like_path = value.startswith((".", "/", "~")) or path.suffix.lower() in CHECKPOINT_SUFFIXES
    if _HUB_ID.match(value) and not looks_like_path:
        return Source("hub", value)
    raise SdloraError(
        f"{option}={value!r} does not exist: give an existing .safetensors/.ckpt file, a diffusers folder "
        "(with model_index.json), or a Hugging Face hub id such as runwayml/stable-diffusion-v1-5"
    )


def single_file_keys(path: str) -> list[str] | None:
    """Tensor names of a ``.safetensors`` file (header only); None for pickle checkpoints (not read twice)."""
    if not path.lower().endswith(".safetensors"):
        return None
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return list(f.keys())
    except Exception as exc:  # a corrupt or truncated file
        raise SdloraError(f"model.pretrained={path!r} is not a readable .safetensors file: {exc}") from exc


def single_file_kind(keys: list[str]) -> str | None:
    """Kind ("sd1", "sd2" or "sdxl") of an original-format checkpoint's keys, or None if it is none of them."""
    for prefix, kind in _SINGLE_FILE_MARKERS:
        if any(k.startswith(prefix) for k in keys):
            return kind
    return None


def is_lora(keys: list[str]) -> bool:
    """Whether tensor names are a LoRA's (kohya, LyCORIS or diffusers/PEFT names) rather than a model's."""
    prefixes = ("lora_unet_", "lora_te", "lycoris_")
    return any(k.startswith(prefixes) or ".lora_down." in k or ".lora_A." in k for k in keys)


def folder_kind(folder: Path) -> str | None:
    """Kind ("sd1", "sd2" or "sdxl") of a diffusers folder, None if unknown: the pipeline class, then the text
    encoder's width (768: OpenAI CLIP-L, 1024: OpenCLIP-H) or, for other widths (the tiny models), its activation
    (OpenAI's ``quick_gelu`` vs OpenCLIP's ``gelu``)."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise SdloraError(
            f"model.pretrained={str(folder)!r} is a folder without model_index.json: point it at a diffusers "
            "pipeline folder (with unet/, vae/, text_encoder/ …) or at a single .safetensors/.ckpt file"
        )
    class_name = json.loads(index.read_text()).get("_class_name", "")
    if "XL" in class_name:
        return "sdxl"
    te_config = folder / "text_encoder" / "config.json"
    te = json.loads(te_config.read_text()) if te_config.is_file() else {}
    by_width = {768: "sd1", 1024: "sd2"}.get(te.get("hidden_size"))
    return by_width or {"quick_gelu": "sd1", "gelu": "sd2"}.get(te.get("hidden_act"))


def check_kind(found: str | None, expected: str, family_name: str, location: str) -> None:
    """Raise when a checkpoint's architecture contradicts the chosen ``model=`` preset."""
    if found is None or found == expected:
        return
    suggestion = " or model=".join(presets_of(found, tiny=family_name in TINY))  # tiny: another tiny model's file
    raise SdloraError(
        f"model.pretrained={location!r} is an {KIND_NAMES[found]} model but model={family_name} expects "
        f"{KIND_NAMES[expected]}: use model={suggestion}"
    )


def declared_prediction_type(source: Source) -> str | None:
    """The prediction type a checkpoint declares: a diffusers folder's scheduler config, or the ``v_pred`` marker key
    some single files carry; None when it says nothing (the family's default applies)."""
    if source.kind == "folder":
        path = Path(source.location) / "scheduler" / "scheduler_config.json"
        return json.loads(path.read_text()).get("prediction_type") if path.is_file() else None
    if source.kind == "file":
        keys = single_file_keys(source.location)
        return "v_prediction" if keys is not None and "v_pred" in keys else None
    return None


def expected_prediction_type(
    pretrained: str | None, v_parameterization: bool | None, family_default_v: bool
) -> str | None:
    """What the model will predict, known before loading it: ``model.v_parameterization`` when set, else what the
    checkpoint declares, else the family's default; None for a hub id that declares nothing locally (known after the
    download). Raises :class:`SdloraError` for a ``pretrained`` that does not exist."""
    if v_parameterization is not None:
        return "v_prediction" if v_parameterization else "epsilon"
    if pretrained:
        source = resolve_source(pretrained)
        declared = declared_prediction_type(source)
        if declared is not None:
            return declared
        if source.kind == "hub":
            return None
    return "v_prediction" if family_default_v else "epsilon"

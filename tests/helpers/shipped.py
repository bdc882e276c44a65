"""Constructor keyword arguments from the shipped config folders, so tests build the same tiny models as sdlora."""

from __future__ import annotations

import json
from types import SimpleNamespace

from sdlora.models.configs import config_dir


def shipped_kwargs(name: str, component: str) -> dict:
    """``config_dir(name)/<component>/config.json`` without diffusers' private ``_*`` keys."""
    config = json.loads((config_dir(name) / component / "config.json").read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}


def meta_components(name: str, encoders: tuple[str, ...]) -> SimpleNamespace:
    """Full-size U-Net and text encoders of a shipped config on the ``meta`` device (no memory, no weights)."""
    import torch
    import transformers
    from diffusers import UNet2DConditionModel

    folder = config_dir(name)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        tes = [
            getattr(transformers, cls)(transformers.CLIPTextConfig.from_pretrained(folder / sub))
            for cls, sub in zip(encoders, ("text_encoder", "text_encoder_2"), strict=False)
        ]
    return SimpleNamespace(unet=unet, text_encoders=tes)

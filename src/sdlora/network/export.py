"""The same LoRA in diffusers/PEFT key format [save.also_diffusers].

Keys are ``<component>.<module path>.lora_A.weight`` (= ``lora_down``) and ``….lora_B.weight`` (= (alpha/rank) ·
``lora_up``), with the pipeline component names ``unet``, ``text_encoder``, ``text_encoder_2`` and diffusers module
paths (text-encoder paths always with ``text_model.``, the usual form; diffusers drops it for encoders without it).
The kohya scale is folded into ``lora_B`` and no alphas are written, so PEFT's convention (alpha = rank, scale 1)
gives exactly the kohya ΔW for every module, whatever its rank or alpha — also where diffusers reads per-module
alphas of a kohya file only approximately (it uses one alpha for all attention projections).

Only plain LoRA modules can be written so (:meth:`~sdlora.network.module.NetworkModule.lora_factors`); the config
refuses ``save.also_diffusers`` for the other types (LoHa, LoKr, iA3, OFT, …), which diffusers cannot load.
"""

from __future__ import annotations

import torch

from sdlora.network.network import LoRANetwork


def peft_key(component: str, path: str) -> str:
    """``unet.down_blocks.0.attentions.0.proj_in`` / ``text_encoder.text_model.encoder.layers.0.mlp.fc1``."""
    if component.startswith("text_encoder") and not path.startswith("text_model."):
        path = f"text_model.{path}"
    return f"{component}.{path}"


@torch.no_grad()
def peft_state_dict(network: LoRANetwork, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """diffusers/PEFT state dict of ``network`` (float32 maths, then cast to ``dtype`` if given)."""
    out: dict[str, torch.Tensor] = {}
    for name, module in network.modules.items():
        injection = network.injections[name]
        key = peft_key(injection.component, injection.path)
        factors = module.lora_factors()
        if factors is None:
            raise ValueError(f"{name} is not a plain LoRA module: diffusers/PEFT cannot load it")
        down, up, scale = factors
        tensors = {"lora_A.weight": down.detach().float(), "lora_B.weight": up.detach().float() * scale}
        for suffix, tensor in tensors.items():
            t = tensor.cpu()
            out[f"{key}.{suffix}"] = (t.to(dtype) if dtype is not None else t).contiguous()
    return out

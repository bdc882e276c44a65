"""SDXL base: two text encoders, pooled text embedding and size/crop time ids, 1024 px, latent scale 0.13025.

Conditioning [kohya: sdxl_train_util]: TE1 (CLIP ViT-L) penultimate hidden state without the final layer norm,
concatenated on the feature axis with TE2's (OpenCLIP bigG) penultimate hidden state; the pooled vector is TE2's
projected output at the EOS token (first chunk for long prompts). ``clip_skip`` does not apply. The U-Net also gets
``time_ids`` = (original h, w, crop top, left, target h, w) per sample. LoRA keys use the original SGM names
(``lora_unet_input_blocks_4_1_…``) and the prefixes ``lora_te1`` / ``lora_te2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

from sdlora.models.family import Components, ModelFamily, TextConditioning
from sdlora.models.weighted_prompts import apply_weights


class SDXLFamily(ModelFamily):
    name = "sdxl"
    shipped_config = "sdxl"
    pipeline_class = "StableDiffusionXLPipeline"
    text_encoder_classes = ("CLIPTextModel", "CLIPTextModelWithProjection")
    tokenizer_pad_tokens = ("<|endoftext|>", "!")
    te_prefixes = ("lora_te1", "lora_te2")
    latent_scale = 0.13025
    default_resolution = 1024
    bucket_reso_multiple = 32  # kohya: verify_bucket_reso_steps(32) for SDXL
    vae_needs_fp32 = True
    base_model_version = "sdxl_base_v1-0"
    modelspec_implementation = "https://github.com/Stability-AI/generative-models"
    unet_blocks = 23

    def encode_text(self, components: Components, captions: list[str]) -> TextConditioning:
        import torch

        te1, te2 = components.text_encoders
        chunks1, weights1 = self.tokenize_weighted(components.tokenizers[0], captions)
        chunks2, weights2 = self.tokenize_weighted(components.tokenizers[1], captions)
        states1, _ = self._clip_states(te1, chunks1, 2, final_norm=False)
        states2, out2 = self._clip_states(te2, chunks2, 2, final_norm=False)
        if weights1 is not None:  # [data.weighted_captions]; the pooled vector stays unweighted
            states1, states2 = apply_weights(states1, weights1), apply_weights(states2, weights2)
        pooled = out2.text_embeds.reshape(len(captions), self.num_chunks, -1)[:, 0]  # [B, P], first chunk
        hidden = torch.cat([states1, states2.to(states1.dtype)], dim=-1)  # [B, L, D1 + D2]
        return TextConditioning(hidden_states=hidden, pooled=pooled)

    def unet_inputs(self, text: TextConditioning, size_cond: torch.Tensor) -> dict[str, Any]:
        time_ids = size_cond.to(device=text.hidden_states.device, dtype=text.hidden_states.dtype)  # [B, 6]
        return {
            "encoder_hidden_states": text.hidden_states,
            "added_cond_kwargs": {"text_embeds": text.pooled, "time_ids": time_ids},
        }

    def sample_pipeline(self, components: Components, scheduler: Any) -> Any:
        from diffusers import StableDiffusionXLPipeline

        te1, te2 = components.text_encoders
        tok1, tok2 = components.tokenizers
        return StableDiffusionXLPipeline(
            vae=components.vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1, tokenizer_2=tok2,
            unet=components.unet, scheduler=scheduler, force_zeros_for_empty_prompt=False,
        )  # fmt: skip

    def pipeline_prompt_kwargs(self, prompt: TextConditioning, negative: TextConditioning) -> dict[str, Any]:
        return {
            "prompt_embeds": prompt.hidden_states,
            "negative_prompt_embeds": negative.hidden_states,
            "pooled_prompt_embeds": prompt.pooled,
            "negative_pooled_prompt_embeds": negative.pooled,
        }

    def unet_namer(self, unet: nn.Module) -> Callable[[str], str]:
        from sdlora.network.naming import SGMUNetNamer

        return SGMUNetNamer(unet)

    def unet_block_index(self, lora_name: str) -> int:
        from sdlora.network.blocks import sdxl_block_index

        return sdxl_block_index(lora_name)

    def modelspec_architecture(self, prediction_type: str) -> str:
        return "stable-diffusion-xl-v1-base"

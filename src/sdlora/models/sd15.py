"""Stable Diffusion 1.x: one CLIP ViT-L/14 text encoder, 512 px, ε-prediction, latent scale 0.18215.

Conditioning is the last hidden state of the text encoder, or with ``clip_skip = n`` the n-th last layer followed by
the final layer norm [kohya: --clip_skip]. LoRA keys are the diffusers module paths (``lora_unet_down_blocks_…``,
``lora_te_text_model_…``).
"""

from __future__ import annotations

from sdlora.models.family import Components, ModelFamily, TextConditioning
from sdlora.models.weighted_prompts import apply_weights


class SD15Family(ModelFamily):
    name = "sd15"
    shipped_config = "sd15"
    pipeline_class = "StableDiffusionPipeline"
    text_encoder_classes = ("CLIPTextModel",)
    tokenizer_pad_tokens = ("<|endoftext|>",)
    te_prefixes = ("lora_te",)
    latent_scale = 0.18215
    default_resolution = 512
    base_model_version = "sd_v1"

    def encode_text(self, components: Components, captions: list[str]) -> TextConditioning:
        chunks, weights = self.tokenize_weighted(components.tokenizers[0], captions)
        states, _ = self._clip_states(components.text_encoders[0], chunks, self.clip_skip or 1, final_norm=True)
        if weights is not None:  # [data.weighted_captions]
            states = apply_weights(states, weights)
        return TextConditioning(hidden_states=states)

    def modelspec_architecture(self, prediction_type: str) -> str:
        return "stable-diffusion-v1"

"""Stable Diffusion 2.x: OpenCLIP ViT-H text encoder, 512 px (ε) or 768 px (v-prediction).

diffusers stores the SD2 text encoder with 23 of OpenCLIP's 24 layers, so its last hidden state (after the final
layer norm) *is* the penultimate layer SD2 was trained on; encoding is therefore the same code as SD1.x (clip_skip
counts from there, as kohya). The tokenizer pads with "!" (id 0).
"""

from __future__ import annotations

from sdlora.models.sd15 import SD15Family


class SD2Family(SD15Family):
    name = "sd2"
    shipped_config = "sd2"
    tokenizer_pad_tokens = ("!",)
    default_resolution = 512
    is_v2 = True
    base_model_version = "sd_v2"

    def modelspec_architecture(self, prediction_type: str) -> str:
        return "stable-diffusion-v2-768-v" if prediction_type == "v_prediction" else "stable-diffusion-v2-512"


class SD2VFamily(SD2Family):
    """SD 2.x 768-v: v-prediction by default [kohya: --v2 --v_parameterization]."""

    name = "sd2_v"
    shipped_config = "sd2_v"
    default_resolution = 768
    default_v_parameterization = True

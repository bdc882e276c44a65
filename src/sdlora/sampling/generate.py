"""Generate one sample image with a diffusers pipeline over the training components.

The prompt and negative prompt are encoded by the model family (the same text conditioning as in training: clip_skip,
long prompts, SDXL's two encoders and pooled output) and passed to the pipeline as embeddings; the pipeline denoises
from noise drawn with a CPU generator seeded with the prompt's seed (the same image on any device), and the latents
are decoded by the VAE outside autocast, in the VAE's own dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from sdlora.sampling.prompts import SamplePrompt


def to_image(pixels: torch.Tensor) -> Image.Image:
    """[3, H, W] in [−1, 1] → an RGB image: round(clamp((x + 1) / 2, 0, 1) · 255)."""
    array = ((pixels.detach().float().cpu().clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)  # [3, H, W]
    return Image.fromarray(np.ascontiguousarray(array.permute(1, 2, 0).numpy()), "RGB")


@torch.no_grad()
def generate(
    family: Any, components: Any, pipeline: Any, prompt: SamplePrompt, size: tuple[int, int], seed: int, scheduler: Any
) -> Image.Image:
    """One image of ``size`` (W, H) for ``prompt``, denoised by ``scheduler``."""
    text = family.encode_text(components, [prompt.prompt])
    negative = family.encode_text(components, [prompt.negative_prompt])
    pipeline.scheduler = scheduler
    width, height = size
    latents = pipeline(
        height=height,
        width=width,
        num_inference_steps=prompt.steps,
        guidance_scale=prompt.scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        **family.pipeline_prompt_kwargs(text, negative),
    ).images  # [1, 4, H/8, W/8]
    vae = components.vae
    with torch.autocast(device_type=latents.device.type, enabled=False):
        pixels = vae.decode(latents.to(vae.dtype) / family.latent_scale).sample  # [1, 3, H, W]
    return to_image(pixels[0])

"""Diffusers config folders (no weights) shipped with sdlora, for offline single-file loading and tiny models.

``assets/configs/<name>/`` holds ``model_index.json``, ``scheduler/scheduler_config.json``, ``unet/config.json``,
``vae/config.json``, ``text_encoder/config.json`` (SDXL also ``text_encoder_2/config.json``):

- ``sd15``: runwayml/stable-diffusion-v1-5; ``sd2``: stabilityai/stable-diffusion-2-base (512 px, epsilon);
  ``sd2_v``: stabilityai/stable-diffusion-2-1 (768 px, v_prediction, ``upcast_attention``);
  ``sdxl``: stabilityai/stable-diffusion-xl-base-1.0. Field by field as in the official repos (SDXL's
  ``model_index.json``, ``unet/`` and ``text_encoder/`` configs are byte-identical: their sha256 equals the official
  git-lfs pointers'; ``sd2`` follows the 2.1-base files, the same architecture as 2-base). Deliberate difference:
  the SD1/SD2 model indexes list no safety checker / feature extractor. Schedulers are the shipped ones (PNDM, DDIM
  for ``sd2_v``, Euler for SDXL); ``DDPMScheduler.from_config`` reads the same betas and prediction type from them.
- ``tiny`` / ``tiny_sd2_v`` / ``tiny_sdxl``: SD1.5-, SD 2.x-v- and SDXL-shaped test models of ~1-2 M parameters per
  component (the two SDXL text encoders have different widths, 32 and 48, which diffusers' single-file loader needs
  to tell them apart; ``tiny_sd2_v`` has SD 2.x's linear projections, head-count list, ``upcast_attention``, GELU text
  encoder with its token ids, and a v-prediction scheduler).

Tokenizers are *not* in these folders, and need not be. With diffusers 0.42.1, ``StableDiffusionPipeline
.from_single_file(ckpt, config=config_dir(name), tokenizer=tok)`` (SDXL: ``tokenizer=tok1, tokenizer_2=tok2``)
never opens ``<config>/tokenizer*``: a component passed as an argument is used as is. The files it reads are
``model_index.json``, ``scheduler/scheduler_config.json`` and the ``config.json`` of each model component not
passed in (checked by tracing ``open``). **Always pass the tokenizers** (:func:`sdlora.models.tokenizer
.load_clip_tokenizer`): without them the call does *not* fail. transformers 5 builds an empty two-token
``CLIPTokenizer`` from the missing subfolder, with no error or warning, and every prompt then encodes to unknown
ids. So no folder carries a copy of the tokenizer (3.5 MB as ``tokenizer.json``).
"""

from __future__ import annotations

from pathlib import Path

from sdlora.models.presets import MODEL_NAMES

#: One shipped config folder per ``model=`` preset, named as the preset.
CONFIG_NAMES: tuple[str, ...] = MODEL_NAMES


def configs_root() -> Path:
    """Folder holding one diffusers config folder per name in :data:`CONFIG_NAMES`."""
    return Path(__file__).resolve().parent / "assets" / "configs"


def config_dir(name: str) -> Path:
    """The shipped diffusers config folder for ``name`` (one of :data:`CONFIG_NAMES`)."""
    if name not in CONFIG_NAMES:
        raise ValueError(f"unknown model config {name!r}; valid names: {', '.join(CONFIG_NAMES)}")
    return configs_root() / name

"""Tiny SD1.5-, SD2-v- and SDXL-shaped families: the real adapters on small shipped configs with seeded random weights.

With ``model.pretrained`` null the components are built from ``models/assets/configs/tiny[_sd2_v|_sdxl]`` and
initialised from ``model.init_seed`` (deterministic, a few MB, milliseconds per step on a CPU). With a path they load
like any other family, using the tiny config for single-file checkpoints. Files they produce carry the metadata of
the family they are shaped like (SD1.5 / SD 2.x-v / SDXL).

``tiny_sd2_v`` has what sets SD 2.x apart: linear ``proj_in``/``proj_out``, a list of attention head counts,
``upcast_attention``, an OpenCLIP-style text encoder (GELU, the ``"!"`` padding, OpenCLIP's fused q/k/v rows in single
files) and v-prediction.
"""

from __future__ import annotations

from sdlora.models.sd2 import SD2VFamily
from sdlora.models.sd15 import SD15Family
from sdlora.models.sdxl import SDXLFamily


class TinyModel:
    """What every tiny family shares (listed first among the bases, so these win over the real family's values)."""

    default_resolution = 64
    default_bucket_reso = (64, 1024)
    bucket_reso_multiple = 16  # the tiny U-Net halves the 1/8-size latent once
    tiny = True


class TinySD15Family(TinyModel, SD15Family):
    name = shipped_config = "tiny"


class TinySD2VFamily(TinyModel, SD2VFamily):
    name = shipped_config = "tiny_sd2_v"


class TinySDXLFamily(TinyModel, SDXLFamily):
    name = shipped_config = "tiny_sdxl"

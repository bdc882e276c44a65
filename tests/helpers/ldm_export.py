"""Export diffusers components to original-format single-file checkpoints (tests write tiny ones and load them back).

The key tables live in the package, :mod:`sdlora.models.ldm_keys` (the tools write merged checkpoints with them); this
module only re-exports them for the tests.
"""

from sdlora.models.ldm_keys import (
    LAYOUTS,
    clip_to_ldm,
    open_clip_to_ldm,
    to_ldm_state_dict,
    unet_to_ldm,
    vae_to_ldm,
    write_checkpoint,
)

__all__ = [
    "LAYOUTS",
    "clip_to_ldm",
    "open_clip_to_ldm",
    "to_ldm_state_dict",
    "unet_to_ldm",
    "vae_to_ldm",
    "write_checkpoint",
]

"""Create the LoRA network a config asks for on loaded components (kohya-semantics §1.1)."""

from __future__ import annotations

from sdlora.models.family import Components, ModelFamily
from sdlora.network.naming import text_encoder_namer
from sdlora.network.network import LoRANetwork
from sdlora.network.targets import text_encoder_targets, unet_targets


def build_network(family: ModelFamily, components: Components, cfg) -> LoRANetwork:
    """Inject LoRA modules of rank ``cfg.rank`` / alpha ``cfg.alpha`` into the sides that are trained.

    The side that is not trained (``network.train_unet`` / ``network.train_text_encoder`` false) gets no modules at
    all: they are neither created nor saved (kohya's ``network_train_*_only``).
    """
    network = LoRANetwork()

    def rank_alpha(target):
        return cfg.rank, cfg.alpha

    if cfg.train_text_encoder:
        for prefix, encoder in zip(family.te_prefixes, components.text_encoders, strict=True):
            network.inject(encoder, text_encoder_targets(encoder), text_encoder_namer(prefix), rank_alpha)
    if cfg.train_unet:
        unet = components.unet
        network.inject(unet, unet_targets(unet), family.unet_namer(unet), rank_alpha)
    network.requires_grad_(True)
    return network

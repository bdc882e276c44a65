"""Create the LoRA network a config asks for on loaded components (kohya-semantics §1).

- ``network=lora``: Linear / 1×1 conv layers of the U-Net transformers and the text encoders' attention and MLP, with
  ``network.rank`` / ``network.alpha``.
- ``network=locon``: also the resnets (3×3 conv1/conv2), downsamplers and upsamplers; their 3×3 convs get
  ``network.conv_rank`` / ``network.conv_alpha``, their Linear and 1×1 children (time_emb_proj, conv_shortcut) the base
  rank and alpha (kohya's edge case).
- Block-wise ranks/alphas and lr weights (:mod:`sdlora.network.blocks`) change the U-Net modules; a rank of 0 (or a
  block lr weight of 0) means no module.
- ``network.weights``: the file's modules with the file's ranks and alphas (:mod:`sdlora.network.weights`).
- The side that is not trained (``network.train_unet`` / ``network.train_text_encoder`` false) gets no modules at
  all: they are neither created nor saved (kohya's ``network_train_*_only``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from sdlora.models.family import Components, ModelFamily
from sdlora.network.blocks import BlockOptions
from sdlora.network.lora import LoRAModule
from sdlora.network.naming import name_targets, text_encoder_namer
from sdlora.network.network import LoRANetwork
from sdlora.network.targets import Target, text_encoder_targets, unet_targets

log = logging.getLogger("sdlora")


@dataclass
class _Side:
    """One root model: every target kohya could put a LoRA on (by kohya name) and those the network type selects."""

    root: nn.Module
    targets: dict[str, Target]
    selected: set[str]
    component: str
    trained: bool
    block_index: Callable[[str], int] | None = None


def is_locon(cfg) -> bool:
    return str(getattr(cfg.name, "value", cfg.name)) == "locon"


def block_options(cfg) -> BlockOptions:
    def values(key: str):
        value = getattr(cfg, key, None)
        return None if value is None else list(value)

    return BlockOptions(
        values("block_lr_weight"),
        values("block_dims"),
        values("block_alphas"),
        values("conv_block_dims"),
        values("conv_block_alphas"),
    )


def _sides(family: ModelFamily, components: Components, cfg) -> list[_Side]:
    sides = []
    for i, (prefix, encoder) in enumerate(zip(family.te_prefixes, components.text_encoders, strict=True)):
        component = "text_encoder" if i == 0 else f"text_encoder_{i + 1}"
        targets = name_targets(text_encoder_targets(encoder), text_encoder_namer(prefix))
        sides.append(_Side(encoder, targets, set(targets), component, cfg.train_text_encoder))
    unet, namer = components.unet, family.unet_namer(components.unet)
    targets = name_targets(unet_targets(unet, conv=True), namer)
    selected = set(targets) if is_locon(cfg) else set(name_targets(unet_targets(unet, conv=False), namer))
    sides.append(_Side(unet, targets, selected, "unet", cfg.train_unet, family.unet_block_index))
    return sides


def build_network(family: ModelFamily, components: Components, cfg) -> LoRANetwork:
    """Inject the LoRA modules ``cfg`` (a ``network`` config node) describes into the loaded ``components``."""
    from sdlora.network.weights import InitialWeights

    initial = InitialWeights(cfg.weights) if getattr(cfg, "weights", None) else None
    blocks = block_options(cfg)
    loraplus = {
        "all": cfg.loraplus_lr_ratio,
        "unet": cfg.loraplus_unet_lr_ratio,
        "text_encoder": cfg.loraplus_text_encoder_lr_ratio,
    }
    network = LoRANetwork(block_options=blocks, loraplus=loraplus)
    sides = _sides(family, components, cfg)
    file_modules = initial.modules if initial else {}
    if initial:
        known = {name for side in sides for name in side.targets}
        initial.check_names(known, {name for side in sides if side.trained for name in side.targets})
    conv_alpha = cfg.conv_alpha if cfg.conv_alpha is not None else 1.0  # kohya: conv_alpha unset → 1

    def factory(side: _Side, name: str, target: Target) -> LoRAModule | None:
        block_index = side.block_index
        if name in file_modules:
            rank, alpha = file_modules[name].rank, file_modules[name].alpha
        elif name not in side.selected:
            return None
        else:
            conv = target.kind == "conv"
            rank, alpha = (cfg.conv_rank, conv_alpha) if conv else (cfg.rank, cfg.alpha)
            if block_index is not None and blocks.active:
                rank, alpha = blocks.rank_alpha(block_index(name), conv, rank, alpha)
            if rank == 0:
                return None
        module = LoRAModule(target.module, rank, alpha, cfg.dropout, cfg.rank_dropout, cfg.module_dropout)
        if initial and name in file_modules:
            initial.load_into(name, module)
        return module

    for side in sides:
        if side.trained:
            network.inject(
                side.root, side.targets,
                lambda name, target, side=side: factory(side, name, target),
                component=side.component, block_index=side.block_index,
            )  # fmt: skip
    if initial:
        loaded = sum(name in file_modules for name in network.modules)
        log.info("network.weights: %d modules start from %s, %d are new", loaded, cfg.weights, len(network) - loaded)
    network.requires_grad_(True)
    return network

"""Create the LoRA network a config asks for on loaded components (docs/kohya.md §1).

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

from sdlora.config.schema import NetworkConfig, NetworkType
from sdlora.models.family import Components, ModelFamily
from sdlora.network.blocks import BlockOptions
from sdlora.network.dispatch import build_module
from sdlora.network.module import ModuleSpec, NetworkModule
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


#: Network types whose U-Net targets include the resnets' and samplers' convs (kohya's LoCon).
CONV_NETWORKS = frozenset({NetworkType.locon})


def conv_alpha(cfg: NetworkConfig) -> float:
    """alpha of the 3×3 convs [conv_alpha]: unset means 1 (kohya), 0 means conv_rank."""
    return cfg.conv_alpha if cfg.conv_alpha is not None else 1.0


def block_options(cfg: NetworkConfig) -> BlockOptions:
    def values(key: str):
        value = getattr(cfg, key)
        return None if value is None else list(value)

    return BlockOptions(
        values("block_lr_weight"),
        values("block_dims"),
        values("block_alphas"),
        values("conv_block_dims"),
        values("conv_block_alphas"),
    )


def _sides(family: ModelFamily, components: Components, cfg: NetworkConfig) -> list[_Side]:
    sides = []
    for i, (prefix, encoder) in enumerate(zip(family.te_prefixes, components.text_encoders, strict=True)):
        component = "text_encoder" if i == 0 else f"text_encoder_{i + 1}"
        targets = name_targets(text_encoder_targets(encoder), text_encoder_namer(prefix))
        sides.append(_Side(encoder, targets, set(targets), component, cfg.train_text_encoder))
    unet, namer = components.unet, family.unet_namer(components.unet)
    targets = name_targets(unet_targets(unet, conv=True), namer)
    conv = cfg.name in CONV_NETWORKS
    selected = set(targets) if conv else set(name_targets(unet_targets(unet, conv=False), namer))
    sides.append(_Side(unet, targets, selected, "unet", cfg.train_unet, family.unet_block_index))
    return sides


def build_network(family: ModelFamily, components: Components, cfg: NetworkConfig) -> LoRANetwork:
    """Inject the modules the ``network`` options describe into the loaded ``components``."""
    from sdlora.network.weights import InitialWeights

    initial = InitialWeights(cfg.weights) if cfg.weights else None
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
    conv_defaults = (cfg.conv_rank, conv_alpha(cfg))

    def factory(side: _Side, name: str, target: Target) -> NetworkModule | None:
        block_index = side.block_index
        if name in file_modules:
            rank, alpha = file_modules[name].rank, file_modules[name].alpha
        elif name not in side.selected:
            return None
        else:
            conv = target.kind == "conv"
            rank, alpha = conv_defaults if conv else (cfg.rank, cfg.alpha)
            if block_index is not None and blocks.active:
                rank, alpha = blocks.rank_alpha(block_index(name), conv, rank, alpha)
            if rank == 0:
                return None
        spec = ModuleSpec(rank, alpha, cfg.dropout, cfg.rank_dropout, cfg.module_dropout)
        module = build_module(cfg.name, target.module, spec)
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
    network.set_trainable(True)
    return network

"""Create the network a config asks for on loaded components (docs/kohya.md §1, docs/network-types.md).

- Which layers: kohya's rule for ``lora``/``locon``/``lora_fa``/``dylora`` (transformer Linear/1×1 layers and the
  text encoders' attention and MLP; with convs also the resnets and samplers), LyCORIS's preset for the LyCORIS types
  (:mod:`sdlora.network.presets`).
- Ranks and alphas: Linear and 1×1 layers get ``network.rank`` / ``network.alpha``; k×k convs ``network.conv_rank`` /
  ``network.conv_alpha`` — null means 1 for kohya's ``conv_alpha`` [networks.lora], ``rank``/``alpha`` for LyCORIS
  (its defaults); Kohya DyLoRA gives convs ``network.alpha`` (kohya's code). The resnets' Linear and 1×1 children
  (time_emb_proj, conv_shortcut) get the base rank and alpha (kohya's edge case).
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
from typing import Any

from torch import nn

from sdlora.config.schema import LycorisPreset, NetworkConfig, NetworkType
from sdlora.errors import SdloraError
from sdlora.models.family import Components, ModelFamily
from sdlora.network.blocks import BlockOptions
from sdlora.network.dispatch import build_module
from sdlora.network.module import ModuleSpec, NetworkModule
from sdlora.network.naming import SGMUNetNamer, name_targets, text_encoder_namer
from sdlora.network.network import LoRANetwork
from sdlora.network.presets import PRESETS, kohya_selects, lycoris_selects, on_input
from sdlora.network.targets import Target, text_encoder_targets, unet_candidates
from sdlora.network.types import trains_convs, type_info

log = logging.getLogger("sdlora")

#: NetworkConfig keys that are LyCORIS keyword arguments of another name.
_LYCORIS_NAMES = {"wd_on_output": "wd_on_out"}
#: Options that choose targets rather than configure a module.
_NETWORK_LEVEL = frozenset({"preset", "train_norm"})


@dataclass
class _Side:
    """One root model: every target any type could put a module on (by kohya name) and those this type selects."""

    root: nn.Module
    targets: dict[str, Target]
    selected: set[str]
    component: str
    trained: bool
    block_index: Callable[[str], int] | None = None


def conv_alpha(cfg: NetworkConfig) -> float | None:
    """alpha of the k×k convs [conv_alpha]: null means 1 for kohya's types, network.alpha for LyCORIS's and Kohya
    DyLoRA's; 0 means conv_rank."""
    if cfg.name == NetworkType.dylora or (cfg.conv_alpha is None and type_info(cfg.name).lycoris):
        return cfg.alpha
    return cfg.conv_alpha if cfg.conv_alpha is not None else 1.0


def conv_rank(cfg: NetworkConfig) -> int | None:
    """rank of the k×k convs [conv_dim]: null means network.rank for LyCORIS (its default)."""
    return cfg.conv_rank if cfg.conv_rank is not None or not type_info(cfg.name).lycoris else cfg.rank


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


def module_options(cfg: NetworkConfig) -> dict[str, Any]:
    """The type's own options as its module class takes them (LyCORIS's keyword names)."""
    names = type_info(cfg.name).options - _NETWORK_LEVEL
    return {_LYCORIS_NAMES.get(key, key): getattr(cfg, key) for key in sorted(names)}


def _selector(cfg: NetworkConfig, sgm: bool) -> Callable[[Target, bool], bool]:
    info = type_info(cfg.name)
    if not info.lycoris:
        convs = bool(trains_convs(cfg.name, cfg.conv_rank))
        return lambda target, unet: kohya_selects(target, unet, convs)
    preset = PRESETS[cfg.preset or LycorisPreset.full]
    return lambda target, unet: lycoris_selects(preset, target, unet, sgm, cfg.train_norm)


def _sides(family: ModelFamily, components: Components, cfg: NetworkConfig) -> list[_Side]:
    sides = []
    unet, namer = components.unet, family.unet_namer(components.unet)
    selects = _selector(cfg, isinstance(namer, SGMUNetNamer))
    for i, (prefix, encoder) in enumerate(zip(family.te_prefixes, components.text_encoders, strict=True)):
        component = "text_encoder" if i == 0 else f"text_encoder_{i + 1}"
        targets = name_targets(text_encoder_targets(encoder), text_encoder_namer(prefix))
        selected = {name for name, target in targets.items() if selects(target, False)}
        sides.append(_Side(encoder, targets, selected, component, cfg.train_text_encoder))
    targets = name_targets(unet_candidates(unet), namer)
    selected = {name for name, target in targets.items() if selects(target, True)}
    sides.append(_Side(unet, targets, selected, "unet", cfg.train_unet, family.unet_block_index))
    return sides


def build_network(family: ModelFamily, components: Components, cfg: NetworkConfig) -> LoRANetwork:
    """Inject the modules the ``network`` options describe into the loaded ``components``."""
    from sdlora.network.weights import InitialWeights

    initial = InitialWeights(cfg.weights, cfg) if cfg.weights else None
    blocks = block_options(cfg)
    loraplus = {
        "all": cfg.loraplus_lr_ratio,
        "unet": cfg.loraplus_unet_lr_ratio,
        "text_encoder": cfg.loraplus_text_encoder_lr_ratio,
    }
    network = LoRANetwork(block_options=blocks, loraplus=loraplus)
    sides = _sides(family, components, cfg)
    if initial:
        known = {name for side in sides for name in side.targets}
        initial.check_names(known, {name for side in sides if side.trained for name in side.targets})
    factory = _Factory(cfg, blocks, initial)
    for side in sides:
        if side.trained:
            network.inject(
                side.root, side.targets,
                lambda name, target, side=side: factory(side, name, target),
                component=side.component, block_index=side.block_index,
            )  # fmt: skip
    factory.report(network)
    network.set_trainable(True)
    return network


class _Factory:
    """Builds the module of one named target (or None: no module there)."""

    def __init__(self, cfg: NetworkConfig, blocks: BlockOptions, initial: Any) -> None:
        self.cfg, self.blocks, self.initial = cfg, blocks, initial
        self.options = module_options(cfg)
        self.preset = PRESETS[cfg.preset or LycorisPreset.full] if type_info(cfg.name).lycoris else None
        self.unfit: list[str] = []

    def rank_alpha(self, side: _Side, name: str, target: Target) -> tuple[int | None, float | None]:
        cfg = self.cfg
        if self.initial and name in self.initial.modules:
            return self.initial.rank_alpha(name)
        conv = target.kind == "conv"
        rank, alpha = (conv_rank(cfg), conv_alpha(cfg)) if conv else (cfg.rank, cfg.alpha)
        if side.block_index is not None and self.blocks.active:
            rank, alpha = self.blocks.rank_alpha(side.block_index(name), conv, rank, alpha)
        return rank, alpha

    def __call__(self, side: _Side, name: str, target: Target) -> NetworkModule | None:
        cfg, from_file = self.cfg, bool(self.initial and name in self.initial.modules)
        if not from_file and name not in side.selected:
            return None
        rank, alpha = self.rank_alpha(side, name, target)
        if rank == 0:
            return None
        options = dict(self.options)
        if self.preset is not None and "train_on_input" in options:
            options["train_on_input"] = options["train_on_input"] or on_input(self.preset, target)
        spec = ModuleSpec(rank, alpha, cfg.dropout, cfg.rank_dropout, cfg.module_dropout, options)
        try:
            module = build_module(cfg.name, target.module, spec)
        except ValueError as exc:
            if from_file:
                raise SdloraError(f"network.weights={cfg.weights!r}: module {name} (rank {rank}): {exc}") from None
            if cfg.name != NetworkType.boft or "decompose" not in str(exc):
                raise
            self.unfit.append(f"{name} ({target.module.weight.shape[0]} outputs)")
            return None
        if from_file:
            self.initial.load_into(name, module)
        return module

    def report(self, network: LoRANetwork) -> None:
        if self.unfit:
            log.warning(
                "network=boft: %d layer(s) have an output size BOFT cannot factorise with network.rank=%s (an even "
                "m ≤ rank with outputs/m a power of two) and get no module, e.g. %s", len(self.unfit), self.cfg.rank,
                ", ".join(self.unfit[:3]),
            )  # fmt: skip
        if self.initial:
            loaded = sum(name in self.initial.modules for name in network.modules)
            log.info("network.weights: %d modules start from %s, %d are new", loaded, self.cfg.weights,
                     len(network) - loaded)  # fmt: skip

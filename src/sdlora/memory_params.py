"""The parameters a run's network has, by type, from the model's config alone (no torch): the LoRA term of the memory
estimate (:mod:`sdlora.memory`; docs/performance.md "Memory estimate").

Which layers: the rules the network builder applies (:func:`sdlora.network.presets.kohya_selects` for kohya's types,
:func:`~sdlora.network.presets.lycoris_selects` with the preset for LyCORIS's), on the layers
:mod:`sdlora.models.sizes` lists from the config. What one module holds, on a layer in → out with a k×k kernel
(k = 1 for Linear), r = ``network.rank`` (k×k convs: ``network.conv_rank``; LyCORIS: the rank when unset):

- kohya's LoRA, LoCon and DyLoRA, LyCORIS's LoCon and DyLoRA: r·(in·k² + out); LoCon with ``use_tucker`` on a k×k
  conv: r·in + r²·k² + r·out;
- LoRA-FA: r·out trained (``lora_up``) and r·in·k² kept frozen (``lora_down``);
- LoHa: 2·r·(in·k² + out); with ``use_tucker`` on a k×k conv: 2·(r²·k² + r·in + r·out);
- iA3: out (in for the layers it trains on their input);
- GLoRA: r·(2·in + in·k² + out);
- full: the layer's weight and bias; ``train_norm``: each norm's weight and bias;
- DoRA (``weight_decompose``) adds out (``wd_on_output``) or in; ``use_scalar`` adds 1;
- LoKr, Diag-OFT and BOFT: counted as LoRA of the same rank (:func:`counted_exactly` is false: the estimate notes it).

Block-wise ranks (``network.block_dims``) are taken as the base rank.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdlora.models.sizes import Layer, ModelSize

if TYPE_CHECKING:
    from sdlora.memory import RunShape

#: Types whose modules are not counted here (a LoRA of the same rank stands in for them).
APPROXIMATED = frozenset({"lokr", "oft", "boft"})


@dataclass(frozen=True)
class NetworkParameters:
    """The network's parameters: those trained, and those it holds frozen (LoRA-FA's ``lora_down``)."""

    trained: int
    frozen: int = 0


def counted_exactly(shape: RunShape) -> bool:
    """Whether :func:`network_parameters` counts ``shape``'s network module by module (else as a LoRA)."""
    return shape.network not in APPROXIMATED


def network_parameters(size: ModelSize, shape: RunShape) -> NetworkParameters:
    """The trained and frozen parameters of ``shape``'s network on the architecture ``size``: Σ over the layers its
    type selects of what one module holds there (the module docstring)."""
    selects = _selector(shape, bool(size.unet.extra.get("text_time_embedding")))
    module = _MODULES.get(shape.network, _lora)
    sides = [(size.unet, True)] if shape.train_unet else []
    if shape.train_text_encoder:
        sides += [(te, False) for te in size.text_encoders]
    trained = frozen = 0
    for component, unet in sides:
        for layer in component.layers:
            if not selects(layer, unet):
                continue
            rank = _rank(shape, layer)
            if rank == 0 and layer.kind != "norm":
                continue  # kohya's types: no module on a conv without network.conv_rank
            if layer.kind == "norm":
                trained += layer.params  # LyCORIS's train_norm: w_norm and b_norm
                continue
            own, held = module(layer, rank, shape)
            trained += own + _extras(layer, shape)
            frozen += held
    return NetworkParameters(trained, frozen)


def _selector(shape: RunShape, sgm_names: bool) -> Callable[[Layer, bool], bool]:
    """The network builder's choice of layers for ``shape`` (``sgm_names``: SDXL, whose top-level layers kohya names
    so that LyCORIS's presets do not find them)."""
    from sdlora.config.schema import LycorisPreset
    from sdlora.network.presets import PRESETS, kohya_selects, lycoris_selects
    from sdlora.network.types import trains_convs, type_info

    if not type_info(shape.network).lycoris:
        convs = bool(trains_convs(shape.network, shape.conv_rank or None))
        return lambda layer, unet: kohya_selects(layer, unet, convs)
    preset = PRESETS[LycorisPreset(shape.preset)]
    return lambda layer, unet: lycoris_selects(preset, layer, unet, sgm_names, shape.train_norm)


def _rank(shape: RunShape, layer: Layer) -> int:
    """Linear and 1×1 layers: the rank; k×k convs: ``conv_rank`` (LyCORIS: the rank when unset)."""
    from sdlora.network.types import type_info

    if layer.kind != "conv":
        return shape.rank
    return shape.conv_rank or (shape.rank if type_info(shape.network).lycoris else 0)


def _reads(shape: RunShape, option: str) -> bool:
    """Whether ``shape``'s network type reads the boolean option ``option`` and it is set."""
    from sdlora.network.types import type_info

    return bool(getattr(shape, option)) and option in type_info(shape.network).options


def _extras(layer: Layer, shape: RunShape) -> int:
    """DoRA's magnitude vector and a trained scalar, for the types that read those options."""
    extra = 0
    if _reads(shape, "weight_decompose"):
        extra += layer.out_features if shape.wd_on_output else layer.in_features
    if _reads(shape, "use_scalar"):
        extra += 1
    return extra


def _tucker(layer: Layer, shape: RunShape) -> bool:
    return layer.kernel > 1 and _reads(shape, "use_tucker")


Module = Callable[[Layer, int, "RunShape"], tuple[int, int]]


def _lora(layer: Layer, rank: int, shape: RunShape) -> tuple[int, int]:
    """lora_down + lora_up: r·(in·k² + out); LyCORIS LoCon with use_tucker on a k×k conv: down 1×1, mid k×k r → r."""
    if _tucker(layer, shape):
        return rank * layer.in_features + rank * rank * layer.kernel**2 + rank * layer.out_features, 0
    return rank * layer.lora_sum, 0


def _lora_fa(layer: Layer, rank: int, shape: RunShape) -> tuple[int, int]:
    """lora_up trained (r·out), lora_down frozen (r·in·k²)."""
    return rank * layer.out_features, rank * layer.in_features * layer.kernel**2


def _loha(layer: Layer, rank: int, shape: RunShape) -> tuple[int, int]:
    """Two pairs hada_w*_a (out × r), hada_w*_b (r × in·k²); with use_tucker on a k×k conv also hada_t* (r × r × k²)
    and the pairs' b side r × in."""
    if _tucker(layer, shape):
        return 2 * (rank * rank * layer.kernel**2 + rank * layer.in_features + rank * layer.out_features), 0
    return 2 * rank * layer.lora_sum, 0


def _ia3(layer: Layer, rank: int, shape: RunShape) -> tuple[int, int]:
    """One scale per output channel, or per input channel where the layer is trained on its input."""
    from sdlora.config.schema import LycorisPreset
    from sdlora.network.presets import PRESETS, on_input

    on_inputs = shape.train_on_input or on_input(PRESETS[LycorisPreset(shape.preset)], layer)
    return (layer.in_features if on_inputs else layer.out_features), 0


def _glora(layer: Layer, rank: int, shape: RunShape) -> tuple[int, int]:
    """a2 (in → r), a1 (r → in), b2 (in → r, the layer's kernel), b1 (r → out)."""
    return rank * (2 * layer.in_features + layer.in_features * layer.kernel**2 + layer.out_features), 0


def _full(layer: Layer, rank: int, shape: RunShape) -> tuple[int, int]:
    return layer.params, 0


_MODULES: dict[str, Module] = {"lora_fa": _lora_fa, "loha": _loha, "ia3": _ia3, "glora": _glora, "full": _full}

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
- LoKr: w1 ⊗ w2 with out = a·b and in = c·d split by LyCORIS's rule (:func:`factorization` with ``factor``): w1 is a×c
  (``decompose_both`` and r < max(a, c)/2: r·(a + c)), w2 is b×d·k² when r ≥ max(b, d)/2, else r·(b + d·k²)
  (``use_tucker`` on a k×k conv: r²·k² + r·(b + d));
- Diag-OFT: out / s blocks of s × s, s the smaller factor of out by :func:`factorization` with the rank: out·s;
- BOFT: m·2^p = out (m even, ≤ rank; :func:`power2_factorization`), (popcount(2^p − 1) + 1) · 2^p · m²; a layer with
  no such split gets no module; ``rescaled`` (OFT, BOFT) adds out;
- full: the layer's weight and bias; ``train_norm``: each norm's weight and bias;
- DoRA (``weight_decompose``) adds out (``wd_on_output``) or in; ``use_scalar`` adds 1.

The two splitting rules are LyCORIS's (lycoris-lora 4.1, ``lycoris.functional.general``), restated here because the
estimate runs before torch is imported; the tests compare every count with the modules LyCORIS builds.

LyCORIS's types (outside ``bypass_mode``) also make autograd keep a rebuilt copy of each targeted weight
(:func:`rebuilt_weights`), which the estimate counts with the activations.

Block-wise options: a U-Net module's rank is its block's entry of ``network.block_dims`` (``conv_block_dims`` for
k×k convs), and a block of rank 0 or of ``block_lr_weight`` 0 gets no module — the builder's rule
(:meth:`sdlora.network.blocks.BlockOptions.rank_alpha`), with the block numbered from the layer's kohya name.

Each module's trained parameters are kept as shapes, so that Adafactor's factored state can be counted
(:func:`factored_elements`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdlora.config.schema import LycorisPreset
from sdlora.models.sizes import Layer, ModelSize
from sdlora.network.blocks import BlockOptions, sd_block_index, sdxl_block_index
from sdlora.network.naming import SGMUNetNamer, diffusers_unet_name
from sdlora.network.presets import PRESETS, kohya_selects, lycoris_selects, on_input
from sdlora.network.types import trains_convs, type_info

if TYPE_CHECKING:
    from sdlora.memory import RunShape


Shape = tuple[int, ...]


@dataclass(frozen=True)
class NetworkParameters:
    """The network's parameters: those trained, and those it holds frozen (LoRA-FA's ``lora_down``); Adafactor's
    second-moment elements over the trained ones (:func:`factored_elements`); whether it has modules on the U-Net's
    resnet and sampler k×k convs (their inputs are then kept for backward too); and the weight elements its forward
    rebuilds and autograd keeps for backward (:func:`rebuilt_weights`), without and with gradient checkpointing."""

    trained: int
    frozen: int = 0
    factored: int = 0
    block_convs: bool = False
    rebuilt: int = 0
    rebuilt_checkpointed: int = 0


@dataclass(frozen=True)
class Placed:
    """One module of the network: the layer it wraps, whether in the U-Net, its rank, the shapes of its trained
    parameters and the elements it holds frozen."""

    layer: Layer
    unet: bool
    rank: int
    trained: tuple[Shape, ...]
    frozen: int = 0


def network_parameters(size: ModelSize, shape: RunShape) -> NetworkParameters:
    """The trained and frozen parameters of ``shape``'s network on the architecture ``size``: Σ over the layers its
    type selects of what one module holds there (the module docstring)."""
    modules = list(placed_modules(size, shape))
    shapes = [s for module in modules for s in module.trained]
    rebuilt, rebuilt_checkpointed = rebuilt_weights(modules, shape)
    return NetworkParameters(
        trained=sum(math.prod(s) for s in shapes),
        frozen=sum(module.frozen for module in modules),
        factored=sum(factored_elements(s) for s in shapes),
        block_convs=any(m.unet and m.layer.kind == "conv" and m.layer.container != "" for m in modules),
        rebuilt=rebuilt,
        rebuilt_checkpointed=rebuilt_checkpointed,
    )


def factored_elements(shape: Shape) -> int:
    """Adafactor's second-moment elements for a parameter of ``shape`` (transformers' ``Adafactor``): a parameter of
    two or more dimensions keeps a row and a column mean, Π shape[:-1] + Π shape[:-2] · shape[-1]; a vector or a
    scalar one value per element."""
    if len(shape) < 2:
        return math.prod(shape)
    return math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]


def placed_modules(size: ModelSize, shape: RunShape) -> Iterator[Placed]:
    """Every module ``shape``'s network puts on ``size``."""
    selects = _selector(shape, _sgm_names(size))
    module = _MODULES.get(shape.network, _lora)
    blocks = BlockOptions(shape.block_lr_weight, shape.block_dims, None, shape.conv_block_dims, None)
    block_of = _unet_block_index(size) if blocks.active else lambda path: -1
    sides = [(size.unet, True)] if shape.train_unet else []
    if shape.train_text_encoder:
        sides += [(te, False) for te in size.text_encoders]
    for component, unet in sides:
        for layer in component.layers:
            if not selects(layer, unet):
                continue
            if layer.kind == "norm":  # LyCORIS's train_norm: w_norm and b_norm
                yield Placed(layer, unet, 0, ((layer.out_features,),) * (2 if layer.bias else 1))
                continue
            base = _rank(shape, layer)
            rank, _ = blocks.rank_alpha(block_of(layer.path) if unet else -1, layer.kind == "conv", base, 0.0)
            if rank == 0:
                continue  # kohya's types: no module on a conv without network.conv_rank; a block of rank 0
            trained, held = module(layer, rank, shape)
            if trained or held:
                yield Placed(layer, unet, rank, (*trained, *_extras(layer, shape)), held)


def _sgm_names(size: ModelSize) -> bool:
    """Whether the U-Net is an SDXL one, whose layers kohya names by the SGM layout (and numbers in 23 blocks)."""
    return bool(size.unet.extra.get("text_time_embedding"))


def _unet_block_index(size: ModelSize) -> Callable[[str], int]:
    """kohya's block number of a U-Net layer path, from the layer's kohya name (:mod:`sdlora.network.blocks`)."""
    if not _sgm_names(size):
        return lambda path: sd_block_index(diffusers_unet_name(path))
    namer = SGMUNetNamer(size.unet.config)

    def index(path: str) -> int:
        try:
            return sdxl_block_index(namer(path))
        except ValueError:
            return -1

    return index


#: A diffusers gradient-checkpointing unit: each resnet and each transformer block is recomputed on its own.
_CHECKPOINT_UNIT = re.compile(r"^(.*?\.(?:resnets|transformer_blocks)\.\d+)\.")
#: Rebuilt weight copies autograd keeps per GLoRA layer (measured on the tiny models: 1.4–1.75).
_GLORA_COPIES = 1.75


def rebuilt_weights(modules: list[Placed], shape: RunShape) -> tuple[int, int]:
    """Weight elements kept for backward because the forward rebuilds W′ = W + ΔW and runs the layer with it: every
    LyCORIS type outside ``bypass_mode`` (kohya's types add their branch to the layer's output instead). One copy of
    each targeted weight (measured 0.98–1.05 on the tiny models), BOFT one per butterfly factor and one more, GLoRA
    :data:`_GLORA_COPIES`. With gradient checkpointing only the layers outside the resnets and transformer blocks keep
    theirs, plus the largest such block while it is recomputed. Returns (without, with checkpointing)."""
    if not type_info(shape.network).lycoris or _reads(shape, "bypass_mode"):
        return 0, 0
    kept, units = 0.0, {}
    for module in modules:
        layer = module.layer
        if layer.kind == "norm":
            continue
        copies = _GLORA_COPIES if shape.network == "glora" else 1.0
        if shape.network == "boft":
            copies = _boft_factors(layer.out_features, module.rank) + 1
        elements = copies * layer.weights
        unit = _CHECKPOINT_UNIT.match(layer.path) if module.unet else None
        if unit is None:
            kept += elements
        else:
            units[unit.group(1)] = units.get(unit.group(1), 0.0) + elements
    return round(kept + sum(units.values())), round(kept + max(units.values(), default=0.0))


def _selector(shape: RunShape, sgm_names: bool) -> Callable[[Layer, bool], bool]:
    """The network builder's choice of layers for ``shape`` (``sgm_names``: SDXL, whose top-level layers kohya names
    so that LyCORIS's presets do not find them)."""
    if not type_info(shape.network).lycoris:
        convs = bool(trains_convs(shape.network, shape.conv_rank or None))
        return lambda layer, unet: kohya_selects(layer, unet, convs)
    preset = PRESETS[LycorisPreset(shape.preset)]
    return lambda layer, unet: lycoris_selects(preset, layer, unet, sgm_names, shape.train_norm)


def _rank(shape: RunShape, layer: Layer) -> int:
    """Linear and 1×1 layers: the rank; k×k convs: ``conv_rank`` (LyCORIS: the rank when unset)."""
    if layer.kind != "conv":
        return shape.rank
    return shape.conv_rank or (shape.rank if type_info(shape.network).lycoris else 0)


def _reads(shape: RunShape, option: str) -> bool:
    """Whether ``shape``'s network type reads the boolean option ``option`` and it is set."""
    return bool(getattr(shape, option)) and option in type_info(shape.network).options


def _extras(layer: Layer, shape: RunShape) -> list[Shape]:
    """DoRA's magnitude vector (out × 1 or 1 × in, as the layer's weight has dimensions) and a trained scalar, for
    the types that read those options."""
    extra: list[Shape] = []
    if _reads(shape, "weight_decompose"):
        extra.append(
            (layer.out_features, 1, *_point(layer)) if shape.wd_on_output else (1, layer.in_features, *_point(layer))
        )
    if _reads(shape, "use_scalar"):
        extra.append(())
    return extra


def _tucker(layer: Layer, shape: RunShape) -> bool:
    return layer.kernel > 1 and _reads(shape, "use_tucker")


def _kernel(layer: Layer) -> Shape:
    """The trailing dimensions of the layer's weight: none for Linear, (k, k) for a conv."""
    return () if layer.kind == "linear" else (layer.kernel, layer.kernel)


def _point(layer: Layer) -> Shape:
    """The trailing dimensions of a pointwise factor on the layer: none for Linear, (1, 1) for a conv."""
    return () if layer.kind == "linear" else (1, 1)


#: What one module holds on a layer of a given rank: its trained parameters' shapes and the elements it holds frozen.
Module = Callable[[Layer, int, "RunShape"], tuple[list[Shape], int]]


def _lora(layer: Layer, rank: int, shape: RunShape) -> tuple[list[Shape], int]:
    """lora_down r × in·k², lora_up out × r; LyCORIS LoCon with use_tucker on a k×k conv: down 1×1, mid k×k r → r."""
    i, o, point = layer.in_features, layer.out_features, _point(layer)
    if _tucker(layer, shape):
        return [(rank, i, *point), (rank, rank, *_kernel(layer)), (o, rank, *point)], 0
    return [(rank, i, *_kernel(layer)), (o, rank, *point)], 0


def _dylora(layer: Layer, rank: int, shape: RunShape) -> tuple[list[Shape], int]:
    """kohya's DyLoRA: down and up held one row (column) a parameter, r of each."""
    return [(1, layer.in_features, *_kernel(layer)), (layer.out_features, 1, *_point(layer))] * rank, 0


def _lycoris_dylora(layer: Layer, rank: int, shape: RunShape) -> tuple[list[Shape], int]:
    """LyCORIS's DyLoRA: rank / ``block_size`` pieces, up out × b and down b × in·k² (flattened)."""
    b = shape.block_size
    return [(layer.out_features, b), (b, layer.in_features * layer.kernel**2)] * (rank // b), 0


def _lora_fa(layer: Layer, rank: int, shape: RunShape) -> tuple[list[Shape], int]:
    """lora_up trained (out × r), lora_down frozen (r·in·k²)."""
    return [(layer.out_features, rank, *_point(layer))], rank * layer.in_features * layer.kernel**2


def _loha(layer: Layer, rank: int, shape: RunShape) -> tuple[list[Shape], int]:
    """Two pairs hada_w*_a (out × r), hada_w*_b (r × in·k²); with use_tucker on a k×k conv hada_t* (r × r × k × k),
    hada_w*_a (r × out) and hada_w*_b (r × in)."""
    i, o = layer.in_features, layer.out_features
    if _tucker(layer, shape):
        return [(rank, rank, *_kernel(layer)), (rank, o), (rank, i)] * 2, 0
    return [(o, rank), (rank, i * layer.kernel**2)] * 2, 0


def _ia3(layer: Layer, rank: int, shape: RunShape) -> tuple[list[Shape], int]:
    """One scale per output channel, or per input channel where the layer is trained on its input (a conv's as
    1 × c × 1 × 1)."""
    on_inputs = shape.train_on_input or on_input(PRESETS[LycorisPreset(shape.preset)], layer)
    channels = layer.in_features if on_inputs else layer.out_features
    return [(channels,) if layer.kind == "linear" else (1, channels, 1, 1)], 0


def _glora(layer: Layer, rank: int, shape: RunShape) -> tuple[list[Shape], int]:
    """a2 (in → r), a1 (r → in), b2 (in → r, the layer's kernel), b1 (r → out)."""
    i, o, point = layer.in_features, layer.out_features, _point(layer)
    return [(rank, i, *point), (i, rank, *point), (rank, i, *_kernel(layer)), (o, rank, *point)], 0


def _full(layer: Layer, rank: int, shape: RunShape) -> tuple[list[Shape], int]:
    """The layer's weight and bias."""
    weight = (layer.out_features, layer.in_features, *_kernel(layer))
    return [weight, (layer.out_features,)] if layer.bias else [weight], 0


def _lokr(layer: Layer, rank: int, shape: RunShape) -> tuple[list[Shape], int]:
    """w1 ⊗ w2 (the module docstring)."""
    (a, b), (c, d) = factorization(layer.out_features, shape.factor), factorization(layer.in_features, shape.factor)
    w1: list[Shape] = [(a, rank), (rank, c)] if shape.decompose_both and rank < max(a, c) / 2 else [(a, c)]
    if rank >= max(b, d) / 2:
        w2: list[Shape] = [(b, d, *_kernel(layer))]
    elif _tucker(layer, shape):
        w2 = [(rank, rank, *_kernel(layer)), (rank, b), (rank, d)]
    else:
        w2 = [(b, rank), (rank, d * layer.kernel**2)]
    return w1 + w2, 0


def _rescale(layer: Layer, shape: RunShape) -> list[Shape]:
    return [(layer.out_features, 1, *_point(layer))] if shape.rescaled else []


def _oft(layer: Layer, rank: int, shape: RunShape) -> tuple[list[Shape], int]:
    """out / s blocks of s × s (s ≤ rank, the smaller factor of out)."""
    size, _ = factorization(layer.out_features, rank)
    return [(layer.out_features // size, size, size), *_rescale(layer, shape)], 0


def _boft(layer: Layer, rank: int, shape: RunShape) -> tuple[list[Shape], int]:
    """popcount(n − 1) + 1 butterfly factors of n blocks m × m, out = m·n (none when out has no such split)."""
    m, n = power2_factorization(layer.out_features, rank)
    if not n:
        return [], 0
    return [(_boft_factors(layer.out_features, rank), n, m, m), *_rescale(layer, shape)], 0


def _boft_factors(out_features: int, rank: int) -> int:
    """BOFT's butterfly factors on a layer: popcount(n − 1) + 1 for its n blocks (0 when it has no module)."""
    _, n = power2_factorization(out_features, rank)
    return f"{n - 1:b}".count("1") + 1 if n else 0


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """LyCORIS's split of ``dimension`` into m ≤ n with m·n = dimension: m = ``factor`` when it divides (and is the
    smaller), else the divisor m ≤ ``factor`` (any, for -1) grown from 1 while m + n falls."""
    if factor > 0 and dimension % factor == 0:
        m, n = factor, dimension // factor
        return (n, m) if m > n else (m, n)
    limit = dimension if factor < 0 else factor
    m, n = 1, dimension
    while m < n:
        new_m = m + 1
        while dimension % new_m:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > m + n or new_m > limit:
            break
        m, n = new_m, new_n
    return (n, m) if m > n else (m, n)


def power2_factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """LyCORIS's BOFT split: (m, n) with m even, m ≤ ``factor`` (any, for -1), n = dimension / m a power of two — the
    largest such m; (0, 0) when there is none."""
    limit = dimension if factor == -1 else factor
    m = n = 0
    while m <= limit:
        m += 2
        while dimension % m and m < dimension:
            m += 2
        if m > limit:
            break
        if (dimension // m).bit_count() == 1:
            n = dimension // m
    return (dimension // n, n) if n else (0, 0)


_MODULES: dict[str, Module] = {
    "dylora": _dylora, "lycoris_dylora": _lycoris_dylora, "lora_fa": _lora_fa, "loha": _loha, "ia3": _ia3,
    "glora": _glora, "full": _full, "lokr": _lokr, "oft": _oft, "boft": _boft,
}  # fmt: skip

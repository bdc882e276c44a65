"""What each network type is, as data: which program kohya runs for it, which options it reads, what its file holds.

One row per ``network=`` option (docs/network-types.md). The config checks (which keys a type uses, which dropouts
act), the metadata (``ss_network_module``, ``ss_network_args``' ``algo``), the file checks of ``network.weights``
and the diffusers export all read this table, so a type's facts live in one place. Nothing here imports torch.

Dropouts: LyCORIS applies ``network.dropout`` (its ``dropout``) only in bypass mode, and rank dropout only where
its module's code draws it; the two sets below are what the module code of lycoris-lora 4.1 does.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdlora.config.schema import NetworkType

LORA_MODULE = "networks.lora"
LYCORIS_MODULE = "lycoris.kohya"
DYLORA_MODULE = "networks.dylora"
LORA_FA_MODULE = "networks.lora_fa"

#: Options every LyCORIS type reads [lycoris.kohya network_args].
_LYCORIS_COMMON = frozenset({"preset", "train_norm"})
#: LoCon/LoHa/LoKr (LyCORIS's low-rank family).
_LOW_RANK = _LYCORIS_COMMON | {"use_tucker", "use_scalar", "rank_dropout_scale", "weight_decompose", "wd_on_output",
                               "bypass_mode", "rs_lora"}  # fmt: skip
_ALL_DROPOUTS = frozenset({"dropout", "rank_dropout", "module_dropout"})


@dataclass(frozen=True)
class TypeInfo:
    """The facts of one network type.

    ``conv``: when the U-Net's resnets and samplers are targeted — ``always`` (Kohya LoCon), ``if_conv_rank``
    (``network.conv_rank`` set: Kohya DyLoRA, LoRA-FA), ``never`` (Standard) or ``preset`` (LyCORIS: the preset
    decides). ``file_format``: the tensors of one module in the file (``lora``: lora_down/lora_up/alpha).
    """

    module: str  # ss_network_module
    algo: str | None = None  # LyCORIS's algo name (ss_network_args "algo")
    options: frozenset[str] = frozenset()  # type-specific NetworkConfig keys it reads
    has_rank: bool = True
    has_alpha: bool = True
    conv: str = "never"
    dropouts: frozenset[str] = _ALL_DROPOUTS  # in the default (rebuild) mode
    bypass_dropouts: frozenset[str] = frozenset()  # with network.bypass_mode=true
    max_norm: bool = True  # network.scale_weight_norms is defined
    loraplus: bool = True  # there is a lora_up matrix for LoRA+ to speed up
    file_format: str = "lora"

    @property
    def lycoris(self) -> bool:
        return self.module == LYCORIS_MODULE


TYPES: dict[NetworkType, TypeInfo] = {
    NetworkType.lora: TypeInfo(LORA_MODULE),
    NetworkType.locon: TypeInfo(LORA_MODULE, conv="always"),
    NetworkType.lora_fa: TypeInfo(LORA_FA_MODULE, conv="if_conv_rank"),
    NetworkType.dylora: TypeInfo(DYLORA_MODULE, options=frozenset({"unit"}), conv="if_conv_rank", dropouts=frozenset()),
    NetworkType.lycoris_locon: TypeInfo(
        LYCORIS_MODULE,
        "lora",
        _LOW_RANK,
        conv="preset",
        dropouts=frozenset({"rank_dropout", "module_dropout"}),
        bypass_dropouts=_ALL_DROPOUTS,
    ),
    NetworkType.loha: TypeInfo(
        LYCORIS_MODULE,
        "loha",
        _LOW_RANK,
        conv="preset",
        dropouts=frozenset({"rank_dropout", "module_dropout"}),
        bypass_dropouts=_ALL_DROPOUTS,
        loraplus=False,
        file_format="loha",
    ),
    NetworkType.lokr: TypeInfo(
        LYCORIS_MODULE,
        "lokr",
        _LOW_RANK | {"factor", "decompose_both"},
        conv="preset",
        dropouts=frozenset({"rank_dropout", "module_dropout"}),
        bypass_dropouts=frozenset({"dropout", "module_dropout"}),
        loraplus=False,
        file_format="lokr",
    ),
    NetworkType.ia3: TypeInfo(
        LYCORIS_MODULE,
        "ia3",
        _LYCORIS_COMMON | {"train_on_input", "bypass_mode"},
        has_rank=False,
        has_alpha=False,
        conv="preset",
        dropouts=frozenset({"module_dropout"}),
        bypass_dropouts=frozenset({"module_dropout"}),
        max_norm=False,
        loraplus=False,
        file_format="ia3",
    ),
    NetworkType.lycoris_dylora: TypeInfo(
        LYCORIS_MODULE,
        "dylora",
        _LYCORIS_COMMON | {"block_size"},
        conv="preset",
        dropouts=frozenset({"module_dropout"}),
        max_norm=False,
        loraplus=False,
    ),
    NetworkType.oft: TypeInfo(
        LYCORIS_MODULE,
        "diag-oft",
        _LYCORIS_COMMON | {"constraint", "rescaled", "bypass_mode"},
        has_alpha=False,
        conv="preset",
        dropouts=frozenset({"rank_dropout", "module_dropout"}),
        bypass_dropouts=frozenset({"dropout", "module_dropout"}),
        loraplus=False,
        file_format="oft",
    ),
    NetworkType.boft: TypeInfo(
        LYCORIS_MODULE,
        "boft",
        _LYCORIS_COMMON | {"constraint", "rescaled", "bypass_mode"},
        has_alpha=False,
        conv="preset",
        dropouts=frozenset({"module_dropout"}),
        bypass_dropouts=frozenset({"module_dropout"}),
        loraplus=False,
        file_format="boft",
    ),
    NetworkType.glora: TypeInfo(
        LYCORIS_MODULE,
        "glora",
        _LYCORIS_COMMON | {"use_scalar", "rs_lora", "bypass_mode", "rank_dropout_scale"},
        conv="preset",
        dropouts=frozenset({"module_dropout"}),
        bypass_dropouts=_ALL_DROPOUTS,
        max_norm=False,
        loraplus=False,
        file_format="glora",
    ),
    NetworkType.full: TypeInfo(
        LYCORIS_MODULE,
        "full",
        _LYCORIS_COMMON | {"rank_dropout_scale"},
        has_rank=False,
        has_alpha=False,
        conv="preset",
        dropouts=frozenset({"rank_dropout", "module_dropout"}),
        max_norm=False,
        loraplus=False,
        file_format="full",
    ),
}

#: Every type-specific option (NetworkConfig keys), to tell a type the ones it does not read.
TYPE_OPTIONS: frozenset[str] = frozenset().union(*(info.options for info in TYPES.values()))

#: The file format of each type's modules, in the words a message uses.
FORMAT_NAMES = {
    "lora": "LoRA (lora_down/lora_up)", "loha": "LoHa (hada_*)", "lokr": "LoKr (lokr_*)",
    "ia3": "iA3 (weight/on_input)", "oft": "Diag-OFT (3-D oft_blocks)", "boft": "BOFT (4-D oft_blocks)",
    "glora": "GLoRA (a1/a2/b1/b2)", "full": "full (diff)", "norm": "norm (w_norm/b_norm)",
}  # fmt: skip


def type_info(name: NetworkType | str) -> TypeInfo:
    return TYPES[NetworkType(name)]


def active_dropouts(name: NetworkType | str, bypass_mode: bool) -> frozenset[str]:
    """The dropout options that act for ``name`` (in bypass mode where ``bypass_mode``)."""
    info = type_info(name)
    return info.bypass_dropouts if bypass_mode and info.bypass_dropouts else info.dropouts


def trains_convs(name: NetworkType | str, conv_rank: int | None) -> bool | None:
    """Whether the U-Net's resnets and samplers are targeted; None: the LyCORIS preset decides."""
    conv = type_info(name).conv
    if conv == "preset":
        return None
    return conv == "always" or (conv == "if_conv_rank" and conv_rank is not None)


def diffusers_loadable(name: NetworkType | str, use_tucker: bool, weight_decompose: bool, train_norm: bool) -> bool:
    """Whether the type's files are plain LoRAs diffusers/PEFT can load (save.also_diffusers)."""
    info = type_info(name)
    return info.file_format == "lora" and not (use_tucker or weight_decompose or train_norm)

"""Optimizer parameter groups of a LoRA network (docs/kohya.md §10.2; sd-scripts ``prepare_optimizer_params``).

- Text encoders: one group per encoder, ``textencoder`` (SD1/2) or ``textencoder1`` / ``textencoder2`` (SDXL), with
  the encoder's entry of ``network.text_encoder_lr`` (one value for all encoders, or a list with one per encoder),
  else ``optimizer.lr`` [text_encoder_lr].
- U-Net: one group ``unet`` with ``network.unet_lr`` else ``optimizer.lr`` [unet_lr]; with ``network.block_lr_weight``
  one group per block, ``unet_block<b>``, whose lr is that times the block's weight.
- LoRA+ [loraplus_lr_ratio, loraplus_unet_lr_ratio, loraplus_text_encoder_lr_ratio]: the ``lora_up`` weights (each
  module's ``plus_parameters()``) of each group move to a group ``<name>_plus`` whose lr is multiplied by the ratio
  (the side's own ratio, else the common one).
- A group whose lr is 0 is dropped (current sd-scripts), so its modules keep their initial values.

The group names become the TensorBoard tags ``lr/<name>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sdlora.network.network import LoRANetwork


def text_encoder_group(name: str) -> tuple[str, int]:
    """Group name and encoder index of a text-encoder LoRA name: lora_te_… → (textencoder, 0),
    lora_te1_… → (textencoder1, 0), lora_te2_… → (textencoder2, 1)."""
    prefix = name.split("_text_model_")[0]
    suffix = prefix.removeprefix("lora_te")
    return f"textencoder{suffix}", (int(suffix) - 1 if suffix else 0)


def text_encoder_lrs(value: float | Sequence[float] | None, count: int, default_lr: float) -> list[float]:
    """``network.text_encoder_lr`` as one lr per encoder: null → optimizer.lr; a number or a 1-list → all encoders."""
    if value is None:
        return [default_lr] * count
    if isinstance(value, int | float):
        return [float(value)] * count
    values = [default_lr if v is None else float(v) for v in value]
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise ValueError(f"network.text_encoder_lr has {len(values)} values for {count} text encoder(s)")
    return values


def param_groups(
    network: LoRANetwork, default_lr: float, unet_lr: float | None, text_encoder_lr: float | Sequence[float] | None
) -> list[dict]:
    """The optimizer's parameter groups, each ``{"name", "params", "lr"}``, in kohya's order (text encoders, U-Net)."""
    unet_lr = default_lr if unet_lr is None else float(unet_lr)
    te_names = [n for n in network.modules if not network.is_unet(n)]
    encoder_count = 1 + max((text_encoder_group(n)[1] for n in te_names), default=-1)
    te_lrs = text_encoder_lrs(text_encoder_lr, encoder_count, default_lr) if te_names else []

    sides: dict[str, tuple[list[str], float, str]] = {}  # group name -> (module names, lr, LoRA+ side)
    for name in te_names:
        group, index = text_encoder_group(name)
        sides.setdefault(group, ([], te_lrs[index], "text_encoder"))[0].append(name)
    blocks = network.block_options
    for name in network.modules:
        if not network.is_unet(name):
            continue
        if blocks.lr_weight is None:
            sides.setdefault("unet", ([], unet_lr, "unet"))[0].append(name)
        else:
            block = network.blocks.get(name, -1)
            sides.setdefault(f"unet_block{block}", ([], unet_lr * blocks.lr_factor(block), "unet"))[0].append(name)

    groups: list[dict] = []
    for group, (names, lr, side) in sides.items():
        ratio = network.loraplus.get(side) or network.loraplus.get("all")
        modules = [network.modules[n] for n in names]
        if ratio:
            plus = [p for m in modules for p in m.plus_parameters()]
            marked = {id(p) for p in plus}
            rest = [p for m in modules for p in m.trainable_parameters() if id(p) not in marked]
            candidates = [(group, rest, lr), (f"{group}_plus", plus, lr * ratio)]
        else:
            candidates = [(group, [p for m in modules for p in m.trainable_parameters()], lr)]
        groups += [{"name": g, "params": p, "lr": r} for g, p, r in candidates if p and r > 0]
    return groups

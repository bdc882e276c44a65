"""Block-wise ranks, alphas and learning rates of the U-Net LoRA (docs/kohya.md §1.3, current sd-scripts).

kohya numbers the U-Net blocks from the LoRA key name:

- SD1/2, 25 blocks: 0 = IN00 (conv_in, never a LoRA), 1–11 = IN01–IN11, 12 = MID, 13–24 = OUT00–OUT11. A module in
  ``down_blocks_i_{resnets|attentions}_j`` is block 1 + 3i + j, ``down_blocks_i_downsamplers_0`` is 1 + 3i + 2;
  ``up_blocks`` likewise from 13; ``mid_block`` is 12.
- SDXL, 23 blocks (SGM names): 0 = time/label embedding, 1–9 = ``input_blocks_0``–``_8``, 10–12 = ``middle_block_0``–
  ``_2``, 13–21 = ``output_blocks_0``–``_8``, 22 = out. Blocks 0, 1 (conv_in) and 22 never hold a LoRA.

The options ``network.block_dims`` / ``block_alphas`` (Linear and 1×1 targets) and ``conv_block_dims`` /
``conv_block_alphas`` (3×3 targets) give one value per block; a block whose rank is 0 or whose ``block_lr_weight`` is
0 gets no LoRA modules at all. ``block_lr_weight`` multiplies the U-Net learning rate per block (one optimizer group
per block). Text-encoder modules are not affected.

Unlike kohya, each list works on its own: kohya ignores ``block_alphas`` and ``conv_block_*`` unless ``block_dims``
or a block lr weight is also given; sdlora applies every list that is set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

SD_BLOCKS = 25  # IN00–IN11, MID, OUT00–OUT11
SDXL_BLOCKS = 23  # emb, IN0–IN8, MID0–MID2, OUT0–OUT8, out

_SD_UPDOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")
_SD_PER_SIDE = 12


def sd_block_index(lora_name: str) -> int:
    """kohya's block number (0–24) of an SD1/2 U-Net LoRA name; −1 for a name outside the down/mid/up blocks."""
    match = _SD_UPDOWN.search(lora_name)
    if match:
        side, i, kind, j = match.group(1), int(match.group(2)), match.group(3), int(match.group(4))
        idx = 3 * i + (2 if kind in ("upsamplers", "downsamplers") else j)
        return 1 + idx if side == "down" else _SD_PER_SIDE + 1 + idx
    if "mid_block_" in lora_name:
        return _SD_PER_SIDE
    return -1


def sdxl_block_index(lora_name: str) -> int:
    """kohya's block number (0–22) of an SDXL (SGM-named) U-Net LoRA name; −1 for anything else."""
    name = lora_name.removeprefix("lora_unet_")
    if name.startswith(("time_embed_", "label_emb_")):
        return 0
    for prefix, first in (("input_blocks_", 1), ("middle_block_", 10), ("output_blocks_", 13)):
        if name.startswith(prefix):
            return first + int(name[len(prefix) :].split("_")[0])
    if name.startswith("out_"):
        return 22
    return -1


@dataclass(frozen=True)
class BlockOptions:
    """The per-block lists of a network config (each None or one value per block)."""

    lr_weight: Sequence[float] | None = None
    dims: Sequence[int] | None = None
    alphas: Sequence[float] | None = None
    conv_dims: Sequence[int] | None = None
    conv_alphas: Sequence[float] | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.lr_weight, self.dims, self.alphas, self.conv_dims, self.conv_alphas))

    def rank_alpha(self, block: int, conv: bool, rank: int, alpha: float) -> tuple[int, float]:
        """(rank, alpha) of a U-Net module in ``block``; rank 0 means no module. ``rank``/``alpha`` are the defaults
        of the module's kind (network.rank/alpha, or conv_rank/conv_alpha for 3×3 convs)."""
        dims, alphas = (self.conv_dims, self.conv_alphas) if conv else (self.dims, self.alphas)
        if block < 0:
            return rank, alpha
        if self.lr_weight is not None and self.lr_weight[block] == 0:
            return 0, alpha
        return (dims[block] if dims is not None else rank), (alphas[block] if alphas is not None else alpha)

    def lr_factor(self, block: int) -> float:
        return 1.0 if self.lr_weight is None or block < 0 else float(self.lr_weight[block])


def kohya_block_lr_weight(
    down: str | Sequence[float] | None,
    mid: Sequence[float] | None,
    up: str | Sequence[float] | None,
    zero_threshold: float = 0.0,
    sdxl: bool = False,
) -> list[float] | None:
    """kohya's ``down_lr_weight`` / ``mid_lr_weight`` / ``up_lr_weight`` network_args → one ``block_lr_weight`` list.

    ``down``/``up`` are lists (short lists are padded with 1, long ones cut) or a preset ``cosine``, ``sine``,
    ``linear``, ``reverse_linear``, ``zeros`` with an optional ``+<base>`` added to every value; weights ≤
    ``zero_threshold`` become 0 [block_lr_zero_threshold]. The result is down + mid + up (SD1/2: 12 + 1 + 12 = 25),
    for SDXL [1] + down + mid + up + [1] (9 + 3 + 9 + 2 = 23), as current sd-scripts.
    """
    if down is None and mid is None and up is None:
        return None
    side, n_mid = (9, 3) if sdxl else (12, 1)

    def as_list(value, length: int) -> list[float]:
        if value is None:
            return [1.0] * length
        if isinstance(value, str):
            value = _preset(value, length)
        values = [float(v) for v in value][:length]
        values += [1.0] * (length - len(values))
        return [v if v > zero_threshold else 0.0 for v in values]

    weights = as_list(down, side) + as_list(mid, n_mid) + as_list(up, side)
    return [1.0, *weights, 1.0] if sdxl else weights


def _preset(spec: str, length: int) -> list[float]:
    name, _, base = spec.partition("+")
    offset = float(base) if base else 0.0
    steps = [i / (length - 1) for i in range(length)]
    curves = {
        "cosine": [math.sin(math.pi * s / 2) for s in reversed(steps)],
        "sine": [math.sin(math.pi * s / 2) for s in steps],
        "linear": steps,
        "reverse_linear": list(reversed(steps)),
        "zeros": [0.0] * length,
    }
    if name not in curves:
        raise ValueError(f"unknown block lr preset {name!r}: use one of {', '.join(curves)} (optionally +<base>)")
    return [v + offset for v in curves[name]]

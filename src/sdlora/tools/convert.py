"""Convert a LoRA between kohya's key format and diffusers'/PEFT's, both ways (beyond kohya).

- ``--to diffusers``: ``<component>.<module path>.lora_A.weight`` = lora_down, ``….lora_B.weight`` = lora_up, with the
  components ``unet``, ``text_encoder``, ``text_encoder_2`` and diffusers module paths (those of
  :func:`sdlora.network.export.peft_key`, as ``save.also_diffusers`` writes). The alphas go into diffusers' own
  ``lora_adapter_metadata`` (per component ``r``, ``lora_alpha``, ``rank_pattern``, ``alpha_pattern``,
  ``target_modules``), which ``load_lora_weights`` reads, so the tensors stay bit-identical and the conversion
  reverses exactly. ``--alpha fold`` instead multiplies lora_B by alpha/rank and writes no alphas: any PEFT reader
  (scale 1) then gets the kohya update, but the conversion no longer reverses bit for bit.
- ``--to kohya``: any format :mod:`sdlora.tools.formats` reads (diffusers/PEFT keys, ``lycoris_`` names, …) to kohya's
  names, as ``sdlora-fix-lora`` writes it; PEFT alphas come from the adapter metadata, else alpha = rank (scale 1).

LoRA and LoCon (3×3 convs: lora_A [r, in, 3, 3], lora_B [out, r, 1, 1] in both formats), SD1/2 and SDXL.

    sdlora-convert-lora my_lora.safetensors --to diffusers --save_to my_lora.diffusers.safetensors
    sdlora-convert-lora peft_lora.safetensors --to kohya --save_to my_lora.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from sdlora.errors import SdloraError
from sdlora.tools import cli

if TYPE_CHECKING:
    import torch

log = logging.getLogger("sdlora")


def _pattern(path: str) -> str:
    """The module path as PEFT matches it (text-encoder paths without ``text_model.``, which newer transformers
    lack)."""
    return path.removeprefix("text_model.")


def adapter_metadata(modules: dict[str, tuple[str, str, int, float]]) -> dict:
    """diffusers' ``lora_adapter_metadata`` for modules ``key → (component, path, rank, alpha)``."""
    config: dict = {}
    for component in sorted({c for c, _, _, _ in modules.values()}):
        own = [(p, r, a) for c, p, r, a in modules.values() if c == component]
        rank = Counter(r for _, r, _ in own).most_common(1)[0][0]
        alpha = Counter(a for _, _, a in own).most_common(1)[0][0]
        config |= {
            f"{component}.r": rank,
            f"{component}.lora_alpha": alpha,
            f"{component}.rank_pattern": {_pattern(p): r for p, r, _ in own if r != rank},
            f"{component}.alpha_pattern": {_pattern(p): a for p, _, a in own if a != alpha},
            f"{component}.target_modules": sorted(_pattern(p) for p, _, _ in own),
        }
    return config


def to_diffusers(normalized, fold: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of the diffusers-format file of kohya-named ``normalized`` modules."""
    from sdlora.network.export import peft_key
    from sdlora.tools.formats import ADAPTER_METADATA, name_index

    table = name_index(normalized.model).table
    tensors: dict[str, torch.Tensor] = {}
    alphas: dict[str, tuple[str, str, int, float]] = {}
    for name, entry in cli.progress(normalized.modules.items(), "converting", len(normalized.modules)):
        if not entry.is_lora:
            raise SdloraError(f"module {name} is not a LoRA/LoCon module (LyCORIS tensors {sorted(entry.tensors)}): "
                              "only LoRA and LoCon have a diffusers/PEFT form")  # fmt: skip
        down, up = entry.tensors["lora_down.weight"], entry.tensors["lora_up.weight"]
        alpha = float(entry.tensors["alpha"].float().reshape(-1)[0]) if "alpha" in entry.tensors else float(
            down.shape[0])  # fmt: skip
        module = table[name]
        key = peft_key(module.component, module.path)
        if fold:
            up = (up.float() * (alpha / down.shape[0])).to(up.dtype)
        tensors[f"{key}.lora_A.weight"] = down.contiguous()
        tensors[f"{key}.lora_B.weight"] = up.contiguous()
        alphas[key] = (module.component, module.path, int(down.shape[0]), alpha)
    meta = {k: v for k, v in normalized.metadata.items() if k != ADAPTER_METADATA}
    if not fold:
        meta[ADAPTER_METADATA] = json.dumps(adapter_metadata(alphas), sort_keys=True)
    return tensors, meta


def convert_lora(lora: str | Path, save_to: str | Path, to: str, alpha: str = "metadata", model: str | None = None):
    """Write ``lora`` in the ``to`` format (``kohya`` or ``diffusers``) to ``save_to``."""
    from sdlora.models.presets import DISPLAY
    from sdlora.network.io import save_lora
    from sdlora.tools.fix import fix_lora
    from sdlora.tools.formats import normalize
    from sdlora.tools.lora_file import load_any_lora

    if to == "kohya":
        return fix_lora(lora, save_to, model)[0]
    source, tensors, metadata = load_any_lora(lora)
    out = cli.output_path(save_to, "--save_to", [source], (".safetensors",))
    normalized = normalize(tensors, metadata, model)
    if normalized.unknown or not normalized.modules:
        example = normalized.unknown[0] if normalized.unknown else "all"
        raise SdloraError(f"{source.name}: module {example} matches no layer of a {DISPLAY[normalized.model]} model")
    from sdlora.tools.fix import kohya_tensors

    kohya_tensors(normalized)  # checks ranks and values; alphas as float scalars
    out_tensors, meta = to_diffusers(normalized, alpha == "fold")
    save_lora(out, out_tensors, meta)
    log.info("%s: %d modules in diffusers/PEFT keys (%s)", out, len(normalized.modules), DISPLAY[normalized.model])
    return out


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "Convert a LoRA (LoRA or LoCon; SD1/2, SDXL) between kohya's keys and diffusers'/PEFT's, either way.",
        "  sdlora-convert-lora my_lora.safetensors --to diffusers --save_to my_lora.diffusers.safetensors\n"
        "  sdlora-convert-lora my_lora.safetensors --to diffusers --alpha fold --save_to for_peft.safetensors\n"
        "  sdlora-convert-lora peft_lora.safetensors --to kohya --save_to my_lora.safetensors\n",
    )
    p.add_argument("lora", help="the LoRA file to convert")
    p.add_argument("--to", choices=("kohya", "diffusers"), required=True, help="the target key format")
    p.add_argument("--save_to", required=True, help="the converted file (a new .safetensors file)")
    p.add_argument("--alpha", choices=("metadata", "fold"), default="metadata",
                   help="--to diffusers: alphas in diffusers' adapter metadata (exact, reversible) or folded into "
                   "lora_B (scale 1 for any PEFT reader)")  # fmt: skip
    p.add_argument(
        "--model",
        choices=cli.PRESETS,
        default=None,
        help="the family (default: the one whose layers hold every module)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    return cli.run_tool(build_parser, lambda a: convert_lora(a.lora, a.save_to, a.to, a.alpha, a.model) and None,
                        argv)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())

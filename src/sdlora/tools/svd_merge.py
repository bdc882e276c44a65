"""Merge LoRAs of any ranks and signs by SVD [kohya: networks/svd_merge_lora.py, the GUI's "SVD Merge LoRA"].

Per module, the full update Σᵢ ρᵢ·(alphaᵢ/rankᵢ)·upᵢ·downᵢ (zero where a LoRA lacks the module) is decomposed by SVD
(:func:`~sdlora.tools.svd.low_rank`) and cut to ``--new_rank`` (``--new_conv_rank`` for k×k convolutions);
up = U_r·diag(S_r) and down = Vh_r are clamped at their 0.99 quantile as kohya does (``--clamp_quantile``, an sdlora
option: 1 keeps the SVD exact), and alpha = r (scale 1). The right way to merge LoRAs of different ranks or opposite
signs: the result is the best rank-r approximation of the summed update.

    sdlora-svd-merge-lora --models a.safetensors b.safetensors --ratios 0.7 0.5 --new_rank 16 --save_to ab.safetensors
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.tools import cli

log = logging.getLogger("sdlora")
CLAMP_QUANTILE = 0.99  # kohya's fixed clamp in svd_merge_lora.py


def read_models(models: list[str], ratios: list[float] | None):
    """The LoRA files and one ratio each (kohya requires as many --ratios as --models)."""
    from sdlora.tools.lora_file import read_lora

    if not models:
        raise SdloraError("--models needs at least one LoRA file")
    ratios = list(ratios) if ratios is not None else [1.0] * len(models)
    if len(ratios) != len(models):
        raise SdloraError(f"--ratios has {len(ratios)} value(s) for {len(models)} --models: give one ratio per LoRA")
    return [read_lora(m, "--models") for m in models], ratios


def svd_merge_lora(
    models: list[str],
    ratios: list[float] | None,
    save_to: str | Path,
    new_rank: int = 4,
    new_conv_rank: int | None = None,
    device: str | None = None,
    save_precision: str | None = None,
    clamp_quantile: float = CLAMP_QUANTILE,
    no_metadata: bool = False,
) -> Path:
    """Write the SVD merge of ``models`` to ``save_to`` (see the module docstring)."""
    from sdlora.tools.combine import module_names
    from sdlora.tools.lora_file import LoraModule, network_metadata, source_model, write_lora
    from sdlora.tools.svd import low_rank

    new_conv_rank = new_conv_rank if new_conv_rank is not None else new_rank
    if new_rank < 1 or new_conv_rank < 1:
        raise SdloraError("--new_rank and --new_conv_rank must be ≥ 1")
    loras, ratios = read_models(models, ratios)
    out = cli.output_path(save_to, "--save_to", [lora.path for lora in loras], cli.LORA_SUFFIXES)
    merged: dict[str, LoraModule] = {}
    names = module_names(loras)
    for name in cli.progress(names, "merging", len(names)):
        delta, is_conv = _summed_delta(name, loras, ratios, device)
        up, down = low_rank(delta, new_conv_rank if is_conv else new_rank, clamp_quantile)
        merged[name] = LoraModule(down.cpu(), up.cpu(), float(down.shape[0]))
    meta = network_metadata(merged, source_model(loras[0]), out.stem, [lora.path.stem for lora in loras])
    if no_metadata:
        meta = {k: v for k, v in meta.items() if not k.startswith("modelspec.")}
    write_lora(out, merged, meta, cli.dtype(save_precision or "float"))
    log.info("merged %d LoRAs into %d modules of rank ≤ %d: %s", len(loras), len(merged), new_rank, out)
    return out


def _summed_delta(name: str, loras, ratios, device: str | None):
    """Σ ρᵢ·ΔWᵢ of module ``name`` in float32 (the LoRAs' layer shapes must agree), and whether it is a k×k conv."""
    from sdlora.tools.combine import module_parts

    parts = module_parts(name, loras, ratios)
    delta = sum(module.delta(ratio, device) for module, ratio, _ in parts)
    return delta, parts[0][0].is_conv


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "Merge LoRAs of any ranks and signs into one LoRA by SVD of their summed update "
        "(kohya's networks/svd_merge_lora.py).",
        "  sdlora-svd-merge-lora --models a.safetensors b.safetensors --ratios 0.7 0.5 --new_rank 16 \\\n"
        "      --save_to ab.safetensors\n"
        "  sdlora-svd-merge-lora --models style.safetensors other.safetensors --ratios 1 -0.5 \\\n"
        "      --save_to difference.safetensors\n",
    )
    p.add_argument("--models", nargs="+", required=True, help="LoRA files (kohya format)")
    p.add_argument("--ratios", nargs="+", type=float, default=None, help="one ratio per LoRA (default: all 1)")
    p.add_argument("--save_to", required=True, help="the merged LoRA (a new file)")
    p.add_argument("--new_rank", type=int, default=4, help="rank of the merged LoRA")
    p.add_argument("--new_conv_rank", type=int, default=None, help="rank of k×k conv modules (default: --new_rank)")
    p.add_argument(
        "--clamp_quantile",
        type=float,
        default=CLAMP_QUANTILE,
        help="clamp up/down at this quantile of their values (kohya's fixed 0.99; 1 = no clamp)",
    )
    p.add_argument("--device", default=None, help="device for the SVDs, e.g. cuda")
    p.add_argument(
        "--precision",
        choices=["float", "fp16", "bf16"],
        default="float",
        help="accepted for kohya's script; sdlora sums and decomposes in float32",
    )
    p.add_argument("--no_metadata", action="store_true", help="no modelspec.* (the ss_* minimum stays)")
    p.add_argument("--save_precision", choices=["float", "fp32", "fp16", "bf16"], default=None,
                   help="dtype of the saved tensors (kohya's default: float)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> None:
        svd_merge_lora(args.models, args.ratios, args.save_to, args.new_rank, args.new_conv_rank, args.device,
                       args.save_precision, args.clamp_quantile, args.no_metadata)  # fmt: skip

    return cli.run_tool(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

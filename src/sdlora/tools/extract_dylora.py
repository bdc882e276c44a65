"""Cut a DyLoRA file to fixed-rank LoRAs [kohya: networks/extract_lora_from_dylora.py, the GUI's "Extract DyLoRA"].

DyLoRA trains its ranks in order of importance, so the first r rank channels form a usable rank-r LoRA. For every
multiple r of ``--unit`` below the file's largest rank this writes ``<save_to stem>-<r:04d><suffix>`` with
``down[:r]``, ``up[:, :r]`` and the alpha unchanged (kohya keeps it: the cut LoRA's scale is alpha/r), and records the
cut in ``ss_training_comment`` and ``ss_network_dim``.

    sdlora-extract-dylora --model dylora.safetensors --save_to cut.safetensors --unit 4
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.tools import cli

log = logging.getLogger("sdlora")


def extract_dylora(model: str | Path, save_to: str | Path, unit: int) -> list[Path]:
    """Write one LoRA per multiple of ``unit`` below the largest rank; returns their paths."""
    from sdlora.tools.lora_file import LoraModule, read_lora, write_lora

    if unit < 1:
        raise SdloraError("--unit must be ≥ 1")
    lora = read_lora(model, "--model")
    base = cli.output_path(save_to, "--save_to", [lora.path], cli.LORA_SUFFIXES)
    max_rank = max(m.rank for m in lora.modules.values())
    ranks = list(range(unit, max_rank, unit))
    if not ranks:
        raise SdloraError(f"--unit {unit} is not below the file's rank {max_rank}: there is nothing to cut")
    module_type = lora.metadata.get("ss_network_module", "")
    if module_type and "dylora" not in module_type.lower():
        log.warning("%s was not trained as DyLoRA (ss_network_module=%s): only DyLoRA orders its ranks by importance",
                    lora.path.name, module_type)  # fmt: skip
    comment = lora.metadata.get("ss_training_comment", "")
    written = []
    for rank in cli.progress(ranks, "cutting", len(ranks)):
        modules = {n: LoraModule(m.down[:rank], m.up[:, :rank], m.alpha) for n, m in lora.modules.items()}
        meta = dict(lora.metadata)
        meta["ss_training_comment"] = f"split from DyLoRA, rank {max_rank} to {rank}; {comment}"
        meta["ss_network_dim"] = str(rank)
        out = base.with_name(f"{base.stem}-{rank:04d}{base.suffix}")
        cli.output_path(out, "--save_to", [lora.path], cli.LORA_SUFFIXES)
        written.append(write_lora(out, modules, meta))
        log.info("rank %d: %s", rank, out)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "Cut a DyLoRA file into fixed-rank LoRAs, one per multiple of --unit "
        "(kohya's networks/extract_lora_from_dylora.py).",
        "  sdlora-extract-dylora --model dylora.safetensors --save_to cut.safetensors --unit 4\n"
        "      # → cut-0004.safetensors, cut-0008.safetensors, … below the DyLoRA's rank\n",
    )
    p.add_argument("--model", required=True, help="the DyLoRA file (kohya format)")
    p.add_argument("--save_to", required=True, help="base name of the outputs (<stem>-<rank:04d><suffix>)")
    p.add_argument("--unit", type=int, required=True, help="rank step of the cuts (the DyLoRA's unit)")
    return p


def main(argv: list[str] | None = None) -> int:
    return cli.run_tool(build_parser, lambda a: extract_dylora(a.model, a.save_to, a.unit) and None, argv)


if __name__ == "__main__":
    raise SystemExit(main())

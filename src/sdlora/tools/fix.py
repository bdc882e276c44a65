"""Write a kohya-format copy of a LoRA that a web UI will not load or will not list (beyond kohya).

Files from other trainers often carry diffusers/PEFT keys, lycoris-lora's ``lycoris_`` names, SDXL U-Net keys with
diffusers names, text-encoder keys without ``text_model_``, no ``.alpha``, an alpha stored as an integer or a 1-element
vector, or no ``ss_base_model_version`` / ``modelspec.architecture`` (A1111 and Forge file LoRAs by these and hide the
ones they cannot place). ``sdlora-verify-lora`` names each problem; this writes a copy with kohya's names
(:mod:`sdlora.tools.formats`), every alpha a float scalar (a missing one is the rank: the scale 1 kohya and diffusers
assume), and the missing metadata of the family the modules belong to. Tensors themselves are not changed.
Unfixable problems (modules no model has — unless ``--drop_unknown`` —, mismatched ranks, NaN/inf) stop it with a
one-line error.

    sdlora-fix-lora downloaded.safetensors --save_to fixed.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sdlora.errors import SdloraError
from sdlora.tools import cli

if TYPE_CHECKING:
    import torch

log = logging.getLogger("sdlora")


def _alpha(entry) -> torch.Tensor | None:
    """The module's alpha as a float scalar in the weights' dtype (a LoRA without one: its rank)."""
    import torch

    floats = [t for role, t in entry.tensors.items() if role != "alpha" and t.is_floating_point()]
    dtype = floats[0].dtype if floats else torch.float32
    alpha = entry.tensors.get("alpha")
    if alpha is None:
        return torch.tensor(float(entry.tensors["lora_down.weight"].shape[0]), dtype=dtype) if entry.is_lora else None
    return torch.tensor(float(alpha.float().reshape(-1)[0]), dtype=dtype)


def kohya_tensors(normalized) -> dict[str, torch.Tensor]:
    """The normalized modules as kohya tensors (LoRA entries checked; every alpha a float scalar)."""
    out: dict[str, torch.Tensor] = {}
    for name, entry in normalized.modules.items():
        if entry.is_lora:
            down, up = entry.tensors["lora_down.weight"], entry.tensors["lora_up.weight"]
            if up.shape[1] != down.shape[0]:
                raise SdloraError(f"module {name}: lora_down has rank {down.shape[0]} but lora_up {up.shape[1]}: "
                                  "the file is damaged and cannot be fixed")  # fmt: skip
        alpha = _alpha(entry)
        if alpha is not None:
            entry.tensors["alpha"] = alpha
        for role, tensor in entry.tensors.items():
            if tensor.is_floating_point() and not tensor.isfinite().all():
                raise SdloraError(f"module {name} holds NaN or infinite values: the file cannot be fixed")
            out[f"{name}.{role}"] = tensor.contiguous()
    return out


def completed_metadata(normalized, tensors: dict[str, torch.Tensor], title: str) -> dict[str, str]:
    """The file's metadata with kohya's network keys and the family's ``ss_*``/``modelspec.*`` keys where missing
    (or contradicting the modules)."""
    from sdlora.models.presets import KIND
    from sdlora.tools.families import model_from_metadata
    from sdlora.tools.lora_file import LoraModule, dim_alpha, family_metadata

    meta = {k: v for k, v in normalized.metadata.items() if k not in ("lora_adapter_metadata", "format")}
    lora = {n: LoraModule(e.tensors["lora_down.weight"], e.tensors["lora_up.weight"], float(e.tensors["alpha"]))
            for n, e in normalized.modules.items() if e.is_lora}  # fmt: skip
    if lora:
        dim, alpha, args = dim_alpha(lora)
        meta.setdefault("ss_network_dim", dim)
        meta.setdefault("ss_network_alpha", alpha)
        meta.setdefault("ss_network_args", json.dumps(args))
    all_lora = all(e.is_lora for e in normalized.modules.values())
    meta.setdefault("ss_network_module", "networks.lora" if all_lora else "lycoris.kohya")
    declared = model_from_metadata(meta)
    family = family_metadata(normalized.model, title)
    for key, value in family.items():
        if key not in meta or (declared and KIND[declared] != KIND[normalized.model] and key in (
                "ss_v2", "ss_base_model_version", "modelspec.architecture", "modelspec.implementation")):  # fmt: skip
            meta[key] = value
    return meta


def fix_lora(
    lora: str | Path, save_to: str | Path, model: str | None = None, drop_unknown: bool = False
) -> tuple[Path, list[str]]:
    """Write the kohya copy of ``lora`` to ``save_to``; returns it and the list of what was changed."""
    from sdlora.models.presets import DISPLAY
    from sdlora.network.io import load_lora, save_lora
    from sdlora.tools.verify import verify_lora

    report = verify_lora(lora, model)
    out = cli.output_path(save_to, "--save_to", [lora], cli.LORA_SUFFIXES)
    tensors, metadata = load_lora(Path(lora).expanduser())
    from sdlora.tools.formats import normalize

    normalized = normalize(tensors, metadata, report.model)
    if normalized.unknown and not drop_unknown:
        raise SdloraError(f"{len(normalized.unknown)} module(s) match no layer of a {DISPLAY[normalized.model]} model, "
                          f"e.g. {normalized.unknown[0]}: --drop_unknown leaves them out, --model picks another "
                          "family")  # fmt: skip
    fixed = kohya_tensors(normalized)
    meta = completed_metadata(normalized, fixed, out.stem)
    save_lora(out, fixed, meta if out.suffix == ".safetensors" else None)
    changes = [p for p in report.problems if "untrained" not in p]
    log.info("%s: %d modules written (%s)%s", out, len(normalized.modules), DISPLAY[normalized.model],
             "".join(f"\n  fixed: {c}" for c in changes) or "; nothing needed fixing")  # fmt: skip
    return out, changes


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "Write a kohya-format copy of a LoRA that a web UI will not load or list: kohya names, float alphas, the "
        "missing metadata (see sdlora-verify-lora for what is wrong).",
        "  sdlora-fix-lora downloaded.safetensors --save_to fixed.safetensors\n"
        "  sdlora-fix-lora peft_sdxl.safetensors --save_to fixed.safetensors --model sdxl\n",
    )
    p.add_argument("lora", help="the LoRA file to fix")
    p.add_argument("--save_to", required=True, help="the fixed copy (a new file)")
    p.add_argument(
        "--model",
        choices=cli.PRESETS,
        default=None,
        help="the family (default: the one whose layers hold every module)",
    )
    p.add_argument("--drop_unknown", action="store_true", help="leave out modules no layer of the family matches")
    return p


def main(argv: list[str] | None = None) -> int:
    return cli.run_tool(build_parser, lambda a: fix_lora(a.lora, a.save_to, a.model, a.drop_unknown) and None, argv)


if __name__ == "__main__":
    raise SystemExit(main())

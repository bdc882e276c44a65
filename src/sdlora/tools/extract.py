"""Extract a LoRA from the difference of two checkpoints [kohya: networks/extract_lora_from_models.py, the GUI's
"Extract LoRA"].

Both models load as the same family (single files or diffusers folders, :mod:`sdlora.tools.checkpoint`). For every
LoRA target (with ``--conv_dim`` also the resnets' and samplers' layers, kohya's LoCon targets), ΔW = W_tuned − W_org
in float32 is decomposed by SVD and cut to r = min(``--dim``, out, in) (``--conv_dim`` for k×k convolutions):
up = U_r·diag(S_r), down = Vh_r, both clamped at the ``--clamp_quantile`` quantile of their values, alpha = r (scale
1). A text encoder whose largest |ΔW| is at most ``--min_diff`` did not change and is left out (said in the log;
kohya decides this for all text encoders together, sdlora for each). The file is a kohya LoRA with kohya's minimum
metadata and ``modelspec.*``.

    sdlora-extract-lora --model_org sd15.safetensors --model_tuned finetuned.safetensors --save_to diff.safetensors \\
        --dim 32 --conv_dim 16
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.tools import cli

log = logging.getLogger("sdlora")


def _same_family(org, tuned, targets_o: dict, targets_t: dict) -> None:
    from sdlora.models.presets import DISPLAY

    same = targets_o.keys() == targets_t.keys() and all(targets_o[n].shape == targets_t[n].shape for n in targets_o)
    if org.model != tuned.model or not same:
        raise SdloraError(
            f"--model_org is {DISPLAY[org.model]} but --model_tuned is {DISPLAY[tuned.model]} (or their layers "
            "differ): a LoRA can only be extracted between two models of the same family and size"
        )


def _unchanged_encoders(pairs: dict, min_diff: float) -> set[str]:
    """Text encoders whose largest |ΔW| over their targets is ≤ min_diff (logged); their modules are left out."""
    largest: dict[str, float] = {}
    for original, tuned in pairs.values():
        if original.component != "unet":
            delta = tuned.target.module.weight.float() - original.target.module.weight.float()
            largest[original.component] = max(largest.get(original.component, 0.0), float(delta.abs().max()))
    unchanged = {c for c, value in largest.items() if value <= min_diff}
    for component, value in sorted(largest.items()):
        state = "unchanged: left out" if component in unchanged else "changed"
        log.info("%s: max |ΔW| = %.3g (--min_diff %g): %s", component, value, min_diff, state)
    return unchanged


def extract_lora(
    model_org: str | Path,
    model_tuned: str | Path,
    save_to: str | Path,
    dim: int = 4,
    conv_dim: int | None = None,
    clamp_quantile: float = 0.99,
    min_diff: float = 0.01,
    device: str | None = None,
    save_precision: str | None = None,
    model: str | None = None,
    v_parameterization: bool | None = None,
    load_precision: str | None = None,
    no_metadata: bool = False,
) -> Path:
    """Write the LoRA extracted from ``model_tuned`` − ``model_org`` to ``save_to``."""
    import torch

    from sdlora.tools.checkpoint import open_checkpoint
    from sdlora.tools.lora_file import LoraModule, write_lora
    from sdlora.tools.svd import low_rank

    if dim < 1 or (conv_dim is not None and conv_dim < 1):
        raise SdloraError("--dim and --conv_dim must be ≥ 1")
    if not 0 < clamp_quantile <= 1:
        raise SdloraError("--clamp_quantile must be in (0, 1]")
    out = cli.output_path(save_to, "--save_to", [model_org, model_tuned], cli.LORA_SUFFIXES)
    load = cli.dtype(load_precision) or torch.float32
    org = open_checkpoint(model_org, "--model_org", model, load, v_parameterization)
    tuned = open_checkpoint(model_tuned, "--model_tuned", model or org.model, load, v_parameterization)
    targets, targets_t = org.targets(conv=conv_dim is not None), tuned.targets(conv=conv_dim is not None)
    _same_family(org, tuned, targets, targets_t)
    pairs = {name: (targets[name], targets_t[name]) for name in targets}
    unchanged = _unchanged_encoders(pairs, min_diff)
    modules: dict[str, LoraModule] = {}
    kept = [name for name, (original, _) in pairs.items() if original.component not in unchanged]
    for name in cli.progress(kept, "extracting", len(kept)):
        original, fine_tuned = pairs[name]
        delta = fine_tuned.target.module.weight.detach().to(device).float()
        delta -= original.target.module.weight.detach().to(device).float()  # ΔW = W_tuned − W_org
        conv = original.target.kind == "conv"
        up, down = low_rank(delta, conv_dim if conv else dim, clamp_quantile)
        modules[name] = LoraModule(down.cpu(), up.cpu(), float(down.shape[0]))
    meta = _metadata(org, dim, conv_dim, out, no_metadata)
    write_lora(out, modules, meta, cli.dtype(save_precision))
    log.info("extracted %d modules (rank %d%s): %s", len(modules), dim, f", conv {conv_dim}" if conv_dim else "", out)
    return out


def _metadata(org, dim: int, conv_dim: int | None, out: Path, no_metadata: bool) -> dict[str, str]:
    """kohya's extraction metadata: the minimum ss_* network keys and, unless --no_metadata, modelspec.*."""
    from sdlora.tools.lora_file import NETWORK_MODULE, family_metadata

    args = {"conv_dim": str(conv_dim), "conv_alpha": str(float(conv_dim))} if conv_dim else {}
    prediction = org.components.prediction_type
    spec = family_metadata(org.model, out.stem)
    fam = org.family
    meta = {
        "ss_v2": str(fam.is_v2),
        "ss_base_model_version": fam.base_model_version_for(prediction),
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": str(dim),
        "ss_network_alpha": str(float(dim)),
        "ss_network_args": json.dumps(args),
    }
    if not no_metadata:
        v = prediction == "v_prediction"
        spec["modelspec.architecture"] = f"{fam.modelspec_architecture(prediction)}/lora"
        spec["modelspec.prediction_type"] = "v" if v else "epsilon"
        meta |= {k: v for k, v in spec.items() if k.startswith("modelspec.")}
    return meta


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "Extract a LoRA (SVD of the weight difference) from an original and a fine-tuned checkpoint "
        "(kohya's networks/extract_lora_from_models.py).",
        "  sdlora-extract-lora --model_org sd15.safetensors --model_tuned tuned.safetensors \\\n"
        "      --save_to diff.safetensors --dim 32\n"
        "  sdlora-extract-lora --model_org /models/sdxl --model_tuned /models/sdxl-tuned --save_to d.safetensors \\\n"
        "      --dim 64 --conv_dim 32 --device cuda --save_precision fp16\n",
    )
    p.add_argument("--model_org", required=True, help="the original model (single file or diffusers folder)")
    p.add_argument("--model_tuned", required=True, help="the fine-tuned model; the LoRA is tuned − original")
    p.add_argument("--save_to", required=True, help="the LoRA file to write")
    p.add_argument("--dim", type=int, default=4, help="rank of the Linear / 1×1 modules")
    p.add_argument("--conv_dim", type=int, default=None, help="rank of the 3×3 conv modules (set: a LoCon)")
    p.add_argument("--clamp_quantile", type=float, default=0.99, help="clamp up/down at this quantile (1: no clamp)")
    p.add_argument("--min_diff", type=float, default=0.01,
                   help="a text encoder whose largest |ΔW| is at most this is left out")  # fmt: skip
    p.add_argument("--device", default=None, help="device for the SVDs, e.g. cuda")
    p.add_argument("--save_precision", choices=["float", "fp32", "fp16", "bf16"], default=None,
                   help="dtype of the saved tensors (default float)")  # fmt: skip
    p.add_argument("--load_precision", choices=["float", "fp32", "fp16", "bf16"], default=None,
                   help="dtype the models are loaded in (default float; fp16/bf16 halve the memory)")  # fmt: skip
    p.add_argument("--model", choices=cli.PRESETS, default=None, help="preset of both models (default: detected)")
    p.add_argument(
        "--v_parameterization",
        action="store_true",
        default=None,
        help="write v-prediction metadata (default: what the model says, or its family's default)",
    )
    p.add_argument("--no_metadata", action="store_true", help="leave out modelspec.* (the ss_* minimum stays)")
    p.add_argument(
        "--v2",
        "--sdxl",
        dest="ignored",
        action="store_true",
        help="accepted for kohya's script; sdlora tells the family from the files (or --model)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> None:
        extract_lora(
            args.model_org, args.model_tuned, args.save_to, args.dim, args.conv_dim, args.clamp_quantile,
            args.min_diff, args.device, args.save_precision, args.model, args.v_parameterization,
            args.load_precision, args.no_metadata,
        )  # fmt: skip

    return cli.run_tool(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

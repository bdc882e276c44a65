"""Check a LoRA file [kohya: networks/check_lora_weights.py, the GUI's "Verify LoRA"] — and name what keeps a web UI
from loading or listing it.

For every module: rank, alpha, ‖down‖, ‖up‖ and ‖ΔW‖ = (alpha/rank)·‖up·down‖_F, flagged when ``lora_up`` is all zero
(untrained), when a tensor holds NaN/inf, when down and up disagree on the rank, or when the alpha is missing or not a
float scalar. LyCORIS modules whose ΔW the file alone decides — LoHa, LoKr, ``full`` — get their rank, alpha and ‖ΔW‖
too, and are flagged when ΔW = 0 (:mod:`sdlora.tools.lycoris_numbers`); the others ((IA)³, OFT, GLoRA, DoRA) only
for NaN/inf. For the file: the family it belongs to (:mod:`sdlora.tools.formats`), key formats other than kohya's
(diffusers/PEFT keys, ``lycoris_`` names, SDXL keys with diffusers names, text-encoder keys without ``text_model_``),
modules no family has, and missing ``ss_base_model_version`` / ``modelspec.architecture`` (A1111 and Forge file or
hide LoRAs by them). ``sdlora-fix-lora`` writes a kohya copy without the fixable problems. ``--json`` prints the report
as JSON. The exit code is 0 when the file could be read (problems are reported, not errors).

    sdlora-verify-lora my_lora.safetensors
    sdlora-verify-lora my_lora.safetensors --json > report.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.tools import cli

log = logging.getLogger("sdlora")


@dataclass
class ModuleReport:
    name: str
    rank: int | None = None
    alpha: float | None = None
    down_norm: float | None = None
    up_norm: float | None = None
    delta_norm: float | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class Report:
    path: str
    model: str | None
    format: str
    modules: list[ModuleReport]
    problems: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def _alpha_problem(alpha) -> str | None:
    if alpha is None:
        return "no .alpha (kohya reads alpha = rank, scale 1; some loaders fail)"
    if not alpha.is_floating_point() or alpha.dim() != 0:
        dtype = str(alpha.dtype).removeprefix("torch.")
        return f"alpha stored as {dtype} of shape {list(alpha.shape)} (not a float scalar)"
    return None


def check_module(name: str, entry) -> ModuleReport:
    """The numbers and problems of one module (LoRA tensors; LyCORIS ones: :func:`_lycoris_module`)."""
    from sdlora.network.functional import delta_weight_norm, lora_scale

    report = ModuleReport(name)
    if any(not t.float().isfinite().all() for t in entry.tensors.values() if t.is_floating_point()):
        report.problems.append("NaN or infinite values")
    if not entry.is_lora:
        return _lycoris_module(report, entry)
    down, up = entry.tensors["lora_down.weight"].float(), entry.tensors["lora_up.weight"].float()
    alpha = entry.tensors.get("alpha")
    report.rank = int(down.shape[0])
    report.alpha = float(alpha.float().reshape(-1)[0]) if alpha is not None else None
    report.down_norm, report.up_norm = float(down.norm()), float(up.norm())
    problem = _alpha_problem(alpha)
    if problem:
        report.problems.append(problem)
    if up.shape[1] != down.shape[0]:
        report.problems.append(f"lora_down has rank {down.shape[0]} but lora_up has rank {up.shape[1]}")
        return report
    report.delta_norm = float(delta_weight_norm(up, down, lora_scale(report.alpha, report.rank)))
    if not up.any():
        report.problems.append("untrained: lora_up is all zero (ΔW = 0)")
    return report


def _lycoris_module(report: ModuleReport, entry) -> ModuleReport:
    """LoHa, LoKr and ``full`` modules: rank, alpha and ‖ΔW‖ from the file (:mod:`sdlora.tools.lycoris_numbers`)."""
    from sdlora.tools.lycoris_numbers import lycoris_numbers

    numbers = lycoris_numbers({k.removesuffix(".weight"): v for k, v in entry.tensors.items()})
    if numbers is None:
        return report
    report.rank, report.alpha, report.delta_norm = numbers.rank, numbers.alpha, numbers.delta_norm
    if numbers.delta_norm == 0:
        report.problems.append("untrained: ΔW = 0")
    return report


def _file_problems(normalized, tensors, metadata: dict) -> list[str]:
    from sdlora.models.presets import DISPLAY, KIND
    from sdlora.tools.families import model_from_metadata
    from sdlora.tools.formats import rename_kind

    problems: list[str] = []
    kinds = Counter(rename_kind(s, k, normalized.model) for s, k in normalized.renamed.items())
    for kind, count in kinds.items():
        example = next((s, k) for s, k in normalized.renamed.items() if rename_kind(s, k, normalized.model) == kind)
        problems.append(f"{count} module(s) with {kind}, e.g. {example[0]} (kohya: {example[1]})")
    if normalized.unknown:
        problems.append(f"{len(normalized.unknown)} module(s) that no {DISPLAY[normalized.model]} model has, e.g. "
                        f"{normalized.unknown[0]}")  # fmt: skip
    unpaired = [k for k, e in normalized.modules.items()
                if ("lora_down.weight" in e.tensors) != ("lora_up.weight" in e.tensors)]  # fmt: skip
    if unpaired:
        problems.append(f"{len(unpaired)} module(s) with lora_down or lora_up alone, e.g. {unpaired[0]}")
    missing = [k for k in ("ss_base_model_version", "modelspec.architecture") if k not in metadata]
    if missing:
        problems.append(f"no {' / '.join(missing)} in the metadata: A1111 and Forge cannot tell which model it is for "
                        "and may hide it")  # fmt: skip
    declared = model_from_metadata(metadata)
    if declared and KIND[declared] != KIND[normalized.model]:
        problems.append(f"the metadata says {DISPLAY[declared]} but the modules are {DISPLAY[normalized.model]}'s")
    return problems


def verify_lora(path: str | Path, model: str | None = None) -> Report:
    """Read ``path`` (any LoRA key format) and report its modules and problems."""
    from sdlora.tools.formats import normalize
    from sdlora.tools.lora_file import key_format, load_any_lora

    file, tensors, metadata = load_any_lora(path)
    normalized = normalize(tensors, metadata, model)
    if not normalized.modules:
        raise SdloraError(f"{file} is not a LoRA: none of its tensors belongs to a module of SD 1.x, 2.x or SDXL")
    modules = [check_module(name, entry) for name, entry in cli.progress(normalized.modules.items(), "checking",
                                                                         len(normalized.modules))]  # fmt: skip
    problems = _file_problems(normalized, tensors, metadata)
    for text, count in Counter(p for m in modules for p in m.problems).items():
        example = next(m.name for m in modules if text in m.problems)
        problems.append(f"{count} module(s): {text}, e.g. {example}")
    return Report(str(file), normalized.model, key_format(list(tensors)), modules, problems)


def print_report(report: Report) -> None:
    from sdlora.models.presets import DISPLAY

    print(f"{report.path}: {len(report.modules)} modules, {report.format} keys, {DISPLAY[report.model]} model")
    print(f"{'module':<80} {'rank':>4} {'alpha':>7} {'|down|':>9} {'|up|':>9} {'|ΔW|':>9}")
    for m in report.modules:
        cells = [f"{v:9.4g}" if v is not None else f"{'-':>9}" for v in (m.down_norm, m.up_norm, m.delta_norm)]
        alpha = f"{m.alpha:7g}" if m.alpha is not None else f"{'-':>7}"
        rank = f"{m.rank:4d}" if m.rank is not None else f"{'-':>4}"
        print(f"{m.name:<80} {rank} {alpha} {' '.join(cells)}{'  ! ' + '; '.join(m.problems) if m.problems else ''}")
    print("problems:" if report.problems else "no problems found")
    for problem in report.problems:
        print(f"  - {problem}")


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "Check a LoRA file: every module's rank, alpha and norms, untrained or broken modules, and what keeps a web "
        "UI from loading it (kohya's networks/check_lora_weights.py, the GUI's Verify LoRA).",
        "  sdlora-verify-lora my_lora.safetensors\n  sdlora-verify-lora my_lora.safetensors --json > report.json\n",
    )
    p.add_argument("lora", help="the LoRA file (.safetensors/.ckpt/.pt; kohya, diffusers/PEFT or LyCORIS keys)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--model", choices=cli.PRESETS, default=None, help="check against this preset instead of the detected one"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> None:
        report = verify_lora(args.lora, args.model)
        if args.json:
            json.dump(report.as_dict(), sys.stdout, indent=2)
            print()
        else:
            print_report(report)

    return cli.run_tool(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Post-hoc EMA (beyond every peer; Karras et al. 2024): the LoRA of any EMA length, solved from a run's snapshots.

A run with ``ema=default ema.posthoc=true`` leaves snapshots of two power-function EMAs in
``<run folder>/posthoc_ema/`` (:mod:`sdlora.callbacks.ema`). For each ``--sigma-rel`` this tool finds the
least-squares combination of the snapshots whose averaging profile is that EMA's (:mod:`sdlora.ema.posthoc`) and
writes ``<output name>-ema-sigma0.070.safetensors`` (kohya keys and metadata, ``ss_ema_sigma_rel``) into the run
folder — so the EMA length is chosen after training, by trying the files (validation loss, samples), instead of
guessing a decay before it. ``--step`` reconstructs the EMA as it was at an earlier snapshot.

    sdlora-posthoc-ema outputs/2025-01-31/12-00-00 --sigma-rel 0.07
    sdlora-posthoc-ema outputs/2025-01-31/12-00-00 --sigma-rel 0.03 0.05 0.1 0.15 --step 1200
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.tools import cli

log = logging.getLogger("sdlora")


@dataclass(frozen=True)
class Snapshot:
    path: Path
    step: int
    updates: int
    gamma: float
    sigma_rel: float
    output_name: str


def read_snapshots(run_dir: Path) -> list[Snapshot]:
    """Every snapshot of ``<run_dir>/posthoc_ema`` (metadata only), by step."""
    from safetensors import safe_open

    from sdlora.callbacks.ema import POSTHOC_DIR

    folder = run_dir / POSTHOC_DIR
    paths = sorted(folder.glob("sigma*-step*.safetensors")) if folder.is_dir() else []
    if not paths:
        raise SdloraError(f"no post-hoc EMA snapshots in {folder}: train with ema=default ema.posthoc=true")
    snapshots = []
    for path in paths:
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            snapshots.append(Snapshot(path, int(meta["ss_steps"]), int(meta["ss_ema_updates"]),
                                      float(meta["ss_ema_gamma"]), float(meta["ss_ema_sigma_rel"]),
                                      meta.get("ss_output_name", "last")))  # fmt: skip
        except (KeyError, ValueError, OSError) as exc:
            raise SdloraError(f"{path} is not a post-hoc EMA snapshot of sdlora ({exc})") from None
    return sorted(snapshots, key=lambda s: (s.step, s.sigma_rel))


def reconstruct(run_dir: Path, sigma_rel: float, step: int | None = None, output: Path | None = None,
                dtype: str | None = None) -> tuple[Path, str]:  # fmt: skip
    """Write the EMA with ``sigma_rel`` at ``step`` (default: the last snapshot's); (its path, a one-line report)."""
    import torch

    from sdlora.ema.decay import gamma_for
    from sdlora.ema.posthoc import combine, fit
    from sdlora.network.io import load_lora, save_lora

    snapshots = read_snapshots(run_dir)
    step = snapshots[-1].step if step is None else step
    at_step = [s for s in snapshots if s.step == step]
    if not at_step:
        steps = sorted({s.step for s in snapshots})
        raise SdloraError(f"--step {step}: no snapshot was taken at that step (snapshots: {_steps_text(steps)})")
    try:
        gamma = gamma_for(sigma_rel)
    except ValueError as exc:
        raise SdloraError(f"--sigma-rel {sigma_rel}: {exc}") from None
    updates = at_step[0].updates
    solution = fit([(s.updates, s.gamma) for s in snapshots], updates, gamma)
    used = [snapshots[i] for i in solution.used]
    tensors = combine((x, load_lora(s.path)[0]) for x, s in zip(solution.coefficients, used, strict=True))
    if dtype is not None:
        tensors = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in tensors.items()}
    _, metadata = load_lora(at_step[-1].path)
    metadata = {k: v for k, v in metadata.items() if not k.startswith("sshs_")}
    metadata.update(ss_ema_sigma_rel=str(sigma_rel), ss_ema_gamma=repr(gamma), ss_ema_posthoc_snapshots=str(len(used)),
                    ss_ema_posthoc_fit_error=f"{solution.relative_error:.3g}")  # fmt: skip
    name = at_step[0].output_name + (f"-step{step:08d}" if step != snapshots[-1].step else "")
    path = output or run_dir / f"{name}-ema-sigma{sigma_rel:.3f}.safetensors"
    save_lora(path, tensors, metadata)
    report = (f"σ_rel {sigma_rel:g} (γ {gamma:.3f}) at step {step} from {len(used)} snapshots (profile fit error "
              f"{100 * solution.relative_error:.2f}%) → {path}")  # fmt: skip
    return path, report


def _steps_text(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 12 else f"{steps[0]} … {steps[-1]} ({len(steps)} steps)"


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "Write the LoRA of any EMA length from a run's post-hoc EMA snapshots (train with ema=default "
        "ema.posthoc=true; Karras et al. 2024).",
        "  sdlora-posthoc-ema outputs/2025-01-31/12-00-00 --sigma-rel 0.07\n"
        "  sdlora-posthoc-ema outputs/2025-01-31/12-00-00 --sigma-rel 0.03 0.05 0.1 0.15 --step 1200\n",
    )
    p.add_argument("run", help="the run folder (it holds posthoc_ema/)")
    p.add_argument("--sigma-rel", dest="sigma_rel", type=float, nargs="+", default=[0.07],
                   help="EMA length(s) as the relative width of the averaging profile, in (0, 0.288)")  # fmt: skip
    p.add_argument("--step", type=int, default=None, help="reconstruct at this snapshot's step (default: the last)")
    p.add_argument("--output", default=None, help="the output file (one --sigma-rel only; default: in the run folder)")
    p.add_argument("--save_precision", choices=sorted(cli.PRECISIONS), default=None,
                   help="dtype of the written LoRA (default: float32)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> None:
        run_dir = Path(args.run).expanduser()
        if not run_dir.is_dir():
            raise SdloraError(f"run={args.run!r} is not a folder: give the run folder of a training run")
        if args.output is not None and len(args.sigma_rel) > 1:
            raise SdloraError("--output takes one --sigma-rel; without it every file goes into the run folder")
        dtype = cli.PRECISIONS[args.save_precision] if args.save_precision else None
        for sigma in args.sigma_rel:
            _, report = reconstruct(run_dir, sigma, args.step, Path(args.output) if args.output else None, dtype)
            print(report)

    return cli.run_tool(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""The memory estimate printed before launch (:mod:`sdlora.memory`) against what a CPU run really uses: peak RSS of a
training run of the mid-size SD1.5-shaped model (``step_overhead.py``'s: half-width U-Net, 223 M parameters) minus
the RSS of the same process before the model was built (Python, torch, diffusers, Lightning), and the bytes autograd
keeps for backward in one step (``saved_tensors_hooks``) against the estimate's activations.

Each case runs ``sdlora.run.train`` in its own process for a few steps (``model=tiny model.config=<mid-size>``,
random weights, ``trainer.accelerator=cpu``). On a GPU the same comparison is made against
``torch.cuda.max_memory_allocated`` by ``benchmarks/gpu_throughput.py``; RSS also holds the allocator's cached and
fragmented pages and, with bf16 weights, the float32 copy the random initialisation made before the cast, so the CPU
comparison is looser than the GPU one.

    python benchmarks/memory_estimate.py [--steps 3] [--part all|activations|run]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

CASES = [  # (name, overrides)
    ("fp32, batch 1, 256 px", ["precision=fp32", "data.batch_size=1"]),
    ("fp32, batch 2, 256 px", ["precision=fp32", "data.batch_size=2"]),
    (
        "fp32, batch 2, 256 px, checkpointing",
        ["precision=fp32", "data.batch_size=2", "model.gradient_checkpointing=true"],
    ),
    ("bf16_mixed, batch 2, 256 px", ["precision=bf16_mixed", "data.batch_size=2"]),
]


def status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process in MB. ``VmHWM`` belongs to the address space
    made at ``exec``; ``getrusage``'s ``ru_maxrss`` would carry over the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def worker(overrides: list[str], steps: int) -> None:
    import lightning  # noqa: F401  (everything a run imports, before the baseline)
    import torch  # noqa: F401
    from diffusers import AutoencoderKL  # noqa: F401
    from transformers import CLIPTextModel  # noqa: F401

    from sdlora.run import train
    from sdlora.utils.quiet import quiet_third_party
    from tests.helpers.config import compose_config

    quiet_third_party()
    from step_overhead import mid_size_config

    with tempfile.TemporaryDirectory() as tmp:
        config = mid_size_config(Path(tmp))
        data = Path(tmp) / "data" / "1_bench"
        data.mkdir(parents=True)
        from PIL import Image

        for i in range(4):
            Image.new("RGB", (256, 256), (40 * i, 80, 120)).save(data / f"{i}.png")
            (data / f"{i}.txt").write_text("a photo of sks dog")
        baseline = status_mb("VmRSS")
        cfg = compose_config("model=tiny", f"model.config={config}", f"data.train_dir={data.parent}",
                             "data.caption_extension=.txt", "data.resolution=256", "data.min_bucket_reso=64",
                             "network.rank=16", "network.train_text_encoder=false", f"trainer.max_steps={steps}",
                             "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", *overrides)  # fmt: skip
        train(cfg, Path(tmp) / "run")
        estimate = json.loads((Path(tmp) / "run" / "data_plan.json").read_text())["memory"]
    peak = status_mb("VmHWM")
    print("RESULT " + json.dumps({"baseline_mb": baseline, "peak_mb": peak, "estimate": estimate}))


def saved_activations(batch: int, precision: str) -> tuple[float, float]:
    """(bytes autograd saved in one U-Net step of the mid-size model, the estimate's activations without the gradient
    allowance), both in MB."""
    import torch
    from step_overhead import mid_size_config

    from sdlora.config.schema import NetworkConfig
    from sdlora.memory import COEFFICIENTS_BY_KIND, unet_activations
    from sdlora.models.sizes import model_size
    from sdlora.models.tiny import TinySD15Family
    from sdlora.network.build import build_network
    from sdlora.utils.saved_bytes import saved_bytes

    with tempfile.TemporaryDirectory() as tmp:
        folder = mid_size_config(Path(tmp))
        family = TinySD15Family(config=str(folder))
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        components = family.load(dtype)
        build_network(family, components, NetworkConfig(rank=16, train_text_encoder=False))
        unet = components.unet
        latents = torch.randn(batch, 4, 32, 32, dtype=dtype)
        text = torch.randn(batch, 77, 768, dtype=dtype)
        with (
            saved_bytes(unet) as saved,
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "fp32"),
        ):
            unet(latents, torch.tensor([500] * batch), encoder_hidden_states=text)
        kind = "fp32" if precision == "fp32" else "mixed"
        elements = unet_activations(model_size(folder).unet, (32, 32), coefficients=COEFFICIENTS_BY_KIND[kind]).full
    return saved[0] / 1e6, batch * elements * (4 if precision == "fp32" else 2) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--part", choices=("all", "activations", "run"), default="all")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker), args.steps)
        return
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if args.part in ("all", "activations"):
        print("activations (one U-Net step, 256 px): saved by autograd vs estimated")
        for batch, precision in ((1, "fp32"), (2, "fp32"), (2, "bf16_mixed")):
            measured, estimated = saved_activations(batch, precision)
            print(f"  {precision:10} batch {batch}: saved {measured:7.1f} MB, estimated {estimated:7.1f} MB "
                  f"({estimated / measured:.2f}x)")  # fmt: skip
    if args.part in ("all", "run"):
        whole_runs(args.steps)


def whole_runs(steps: int) -> None:
    print("whole run (peak RSS − RSS before the model) vs the estimate's training peak")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])}
    for name, overrides in CASES:
        command = [sys.executable, __file__, "--worker", json.dumps(overrides), "--steps", str(steps)]
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            print(f"  {name}: failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
            continue
        result = json.loads(lines[-1].removeprefix("RESULT "))
        used = result["peak_mb"] - result["baseline_mb"]
        estimate = result["estimate"]["training_peak_gb"] * 1000
        print(f"  {name:40} measured {used:7.0f} MB, estimated {estimate:7.0f} MB ({estimate / used:.2f}x); "
              f"RSS before the model {result['baseline_mb']:.0f} MB, peak {result['peak_mb']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()

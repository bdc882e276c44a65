"""The memory estimate printed before launch (:mod:`sdlora.memory`) against what a CPU run really uses: peak RSS of a
training run of the mid-size SD1.5-shaped model (``step_overhead.py``'s: half-width U-Net, 223 M parameters) minus
the RSS of the same process before the model was built (Python, torch, diffusers, Lightning), and the bytes autograd
keeps for backward in one step (``saved_tensors_hooks``) against the estimate's activations.

Each case runs ``sdlora.run.train`` in its own process for a few steps (``model=tiny model.config=<mid-size>``,
random weights, ``trainer.accelerator=cpu``) and measures the training peak two ways:

- **allocated**: the bytes of all live tensors between two steps plus the most the third step allocates on top of
  them (torch's profiler with memory events) — what ``torch.cuda.max_memory_allocated`` reads on a GPU, which is the
  figure the estimate predicts and ``benchmarks/gpu_throughput.py`` compares it with;
- **RSS** (``VmHWM`` − RSS before the model): over the whole process, and over the second step alone (the worker
  returns the C allocator's free pages with ``malloc_trim`` and resets the kernel's high-water mark with
  ``/proc/self/clear_refs`` before it). RSS also holds what no tensor does: pages the allocator keeps after frees,
  oneDNN's scratch buffers, the Python objects of Lightning and the data loader — a GPU's reserved rather than
  allocated memory — so it stays above the estimate.

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
    # LyCORIS (preset full): the rebuilt weights autograd keeps, and their share with gradient checkpointing
    ("LyCORIS LoCon, fp32, batch 2, 256 px", ["precision=fp32", "data.batch_size=2", "network=lycoris_locon"]),
    (
        "LyCORIS LoCon, fp32, batch 2, 256 px, checkpointing",
        ["precision=fp32", "data.batch_size=2", "network=lycoris_locon", "model.gradient_checkpointing=true"],
    ),
]


def status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process in MB. ``VmHWM`` belongs to the address space
    made at ``exec``; ``getrusage``'s ``ru_maxrss`` would carry over the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def live_tensor_mb() -> float:
    """MB held by every tensor Python can reach now (each storage once): the weights, the LoRA, its gradients and the
    optimizer state between two steps."""
    import gc

    import torch

    storages = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu" and not obj.is_meta:
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values()) / 1e6


def profiled_peak_mb(trace: Path) -> float:
    """The highest ``Total Allocated`` of the CPU allocator's ``[memory]`` events in a profiler trace: the peak of the
    bytes allocated (and not freed) since profiling started — a CPU's ``max_memory_allocated`` over that window."""
    events = json.loads(trace.read_text())["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return max(totals, default=0) / 1e6


def steady_state_meter(trace: Path):
    """A Lightning callback that measures the second step by its RSS and the third by its allocations (the profiler's
    own records would inflate RSS). Before the second step it frees the C allocator's unused pages and resets the
    peak RSS (``at_reset_mb``: RSS right after; ``steady_peak_mb``: ``VmHWM`` after that step). Before the third it
    adds up the live tensors (``live_mb``) and starts torch's profiler with memory events, which it stops after the
    step (``step_peak_mb``: the most the step allocated on top of what was live). ``live_mb + step_peak_mb`` is the
    allocated peak, the figure the GPU benchmark reads with ``torch.cuda.max_memory_allocated``."""
    import ctypes

    import lightning as L
    from torch.profiler import ProfilerActivity, profile

    class SteadyState(L.Callback):
        at_reset_mb = first_step_peak_mb = steady_peak_mb = live_mb = step_peak_mb = None
        profiler = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == 1 and self.at_reset_mb is None:
                self.first_step_peak_mb = status_mb("VmHWM")
                ctypes.CDLL("libc.so.6").malloc_trim(0)
                Path("/proc/self/clear_refs").write_text("5")
                self.at_reset_mb = status_mb("VmRSS")
            elif trainer.global_step == 2 and self.live_mb is None:
                self.steady_peak_mb = status_mb("VmHWM")
                self.live_mb = live_tensor_mb()
                self.profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
                self.profiler.__enter__()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if self.profiler is not None:
                self.profiler.__exit__(None, None, None)
                self.profiler.export_chrome_trace(str(trace))
                self.profiler = None
                self.step_peak_mb = profiled_peak_mb(trace)

    return SteadyState()


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
        baseline, baseline_live = status_mb("VmRSS"), live_tensor_mb()
        cfg = compose_config("model=tiny", f"model.config={config}", f"data.train_dir={data.parent}",
                             "data.caption_extension=.txt", "data.resolution=256", "data.min_bucket_reso=64",
                             "network.rank=16", "network.train_text_encoder=false", f"trainer.max_steps={steps}",
                             "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", *overrides)  # fmt: skip
        meter = steady_state_meter(Path(tmp) / "trace.json")
        train(cfg, Path(tmp) / "run", callbacks=[meter])
        estimate = json.loads((Path(tmp) / "run" / "data_plan.json").read_text())["memory"]
        steady = meter.steady_peak_mb
    result = {"baseline_mb": baseline, "peak_mb": max(meter.first_step_peak_mb, steady), "steady_peak_mb": steady,
              "at_reset_mb": meter.at_reset_mb,
              "allocated_peak_mb": meter.live_mb + meter.step_peak_mb - baseline_live,
              "live_mb": meter.live_mb, "estimate": estimate}  # fmt: skip
    print("RESULT " + json.dumps(result))


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
    parser.add_argument("--cases", nargs="+", metavar="TEXT", help="whole runs: only the cases whose name has a TEXT")
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
        whole_runs(args.steps, args.cases)


def whole_runs(steps: int, only: list[str] | None = None) -> None:
    if steps < 3:
        raise SystemExit("--steps: at least 3 (the second step's RSS and the third's allocations are read)")
    print("training peak of each case, measured two ways, against the estimate's training peak")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])}
    for name, overrides in CASES:
        if only and not any(text in name for text in only):
            continue
        command = [sys.executable, __file__, "--worker", json.dumps(overrides), "--steps", str(steps)]
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            print(f"  {name}: failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
            continue
        result = json.loads(lines[-1].removeprefix("RESULT "))
        whole, steady = (result[key] - result["baseline_mb"] for key in ("peak_mb", "steady_peak_mb"))
        allocated = result["allocated_peak_mb"]
        estimate = result["estimate"]["training_peak_gb"] * 1000
        print(f"  {name}: estimated {estimate:.0f} MB")
        print(f"    allocated: tensors between steps {result['live_mb']:.0f} MB + the third step's peak = "
              f"{allocated:.0f} MB (estimate {estimate / allocated:.2f}x)")  # fmt: skip
        print(f"    RSS − RSS before the model ({result['baseline_mb']:.0f} MB): whole process {whole:.0f} MB "
              f"({estimate / whole:.2f}x), the second step {steady:.0f} MB ({estimate / steady:.2f}x; "
              f"{result['at_reset_mb'] - result['baseline_mb']:.0f} MB when it started)")  # fmt: skip


if __name__ == "__main__":
    main()

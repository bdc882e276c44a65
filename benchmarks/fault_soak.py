"""Fault-injection soak: kill a training run at random moments, resume it each time, and check that nothing is lost.

One uninterrupted run gives the reference LoRA. Then the same run is started in its own folder and, N times, killed
after a random delay — SIGKILL (nothing can be saved) or SIGTERM (a graceful stop) — and started again with
``resume=auto`` (the newest intact state of its folder; from scratch when there is none). After every kill every
LoRA file and training state in the folder is checked: it loads, its values are finite, a state's manifest matches.
At the end the final LoRA must equal the reference bit for bit. Prints kills survived / files checked / bytes lost
(the bytes of visible files that did not load or were not finite; target: every kill survived, 0 lost).

    python benchmarks/fault_soak.py [--kills 10] [--steps 60] [--seed 0]

Tiny model on the bundled example data, CPU, one torch thread; step saves and states every 2 steps.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def overrides(steps: int) -> list[str]:
    return ["model=tiny", f"data.train_dir={ROOT / 'examples' / 'data'}", "data.caption_extension=.txt",
            "data.resolution=64", "data.batch_size=2", "data.flip_aug=true", f"trainer.max_steps={steps}",
            "save.state=true", "save.every_n_steps=2", "save.last_n_steps=4", "trainer.enable_progress_bar=false",
            "trainer.accelerator=cpu"]  # fmt: skip


def start(run_dir: Path, steps: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "train.py", *overrides(steps), *extra, f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def check_folder(folder: Path) -> tuple[int, int]:
    """(files checked, bytes of visible files that are unusable)."""
    import torch

    from sdlora.network.io import load_lora
    from sdlora.state.folder import state_problem
    from sdlora.state.resume import state_folders

    checked = lost = 0
    for path in folder.glob("*.safetensors"):
        checked += 1
        try:
            tensors, _ = load_lora(path)
            ok = all(torch.isfinite(t).all() for t in tensors.values())
        except Exception:
            ok = False
        lost += 0 if ok else path.stat().st_size
    for state in state_folders(folder, max_depth=1):
        checked += 1
        if state_problem(state) is not None:
            lost += sum(p.stat().st_size for p in state.iterdir())
    return checked, lost


def same_lora(a: Path, b: Path) -> bool:
    import torch

    from sdlora.network.io import load_lora

    ta, _ = load_lora(a)
    tb, _ = load_lora(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10, help="random kills before the run may finish")
    parser.add_argument("--steps", type=int, default=80, help="optimizer steps of the run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times and signals")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="sdlora-soak-") as tmp:
        reference, run_dir = Path(tmp) / "reference", Path(tmp) / "run"
        started = time.perf_counter()
        if start(reference, args.steps).wait() != 0:
            raise SystemExit("the uninterrupted reference run failed")
        duration = time.perf_counter() - started
        survived = checked = lost = 0
        for kill in range(args.kills):
            process = start(run_dir, args.steps, "resume=auto")
            time.sleep(rng.uniform(0.3, 0.8) * duration)  # start-up takes a good part of the duration
            sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM])  # most kills give no warning
            process.send_signal(sig)
            process.wait()
            c, b = check_folder(run_dir)
            checked, lost = checked + c, lost + b
            survived += b == 0
            print(f"kill {kill + 1}: {signal.Signals(sig).name}, exit {process.returncode}, {c} files checked, "
                  f"{b} bytes unusable")  # fmt: skip
        final = start(run_dir, args.steps, "resume=auto")
        if final.wait() != 0:
            raise SystemExit(f"the last resume failed:\n{final.stderr.read()[-2000:]}")
        c, b = check_folder(run_dir)
        checked, lost = checked + c, lost + b
        equal = same_lora(reference / "last.safetensors", run_dir / "last.safetensors")
        print(
            f"kills survived: {survived}/{args.kills}; files checked: {checked}; bytes lost: {lost}; "
            f"final LoRA equals the uninterrupted run's: {'yes' if equal else 'NO'}"
        )


if __name__ == "__main__":
    main()

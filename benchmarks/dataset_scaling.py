"""How ``dry_run=true`` scales with the dataset: wall time and peak RSS on 1k, 10k and 100k small images.

Each size is a synthetic kohya-layout dataset (:mod:`make_dataset`: four training folders with repeats and ``.txt``
captions, a regularisation folder, seven aspect ratios, PNG and JPEG), written once under ``--root`` and reused. Each
measurement is a fresh ``python train.py model=tiny … dry_run=true`` process (what a user runs): the median and the
best wall time of ``--repeat`` runs after one warm-up run (which also warms the file cache), and the peak RSS of the
process. Printed: seconds, µs per image (median), MiB, and the ratios 10k/1k and 100k/10k of the medians (linear
scaling: about 10×, less while start-up dominates). Target (docs/performance.md): 100k images in under 8 s.

    python benchmarks/dataset_scaling.py [--sizes 1000 10000 100000] [--repeat 3] [--root /tmp/sdlora_bench]
    python benchmarks/dataset_scaling.py --profile 100000     # cProfile of one in-process dry run (top 25)
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_dataset import make_dataset  # noqa: E402


def overrides(dataset: Path, run_dir: Path) -> list[str]:
    return [
        "model=tiny", f"data.train_dir={dataset / 'train'}", f"data.reg_dir={dataset / 'reg'}",
        "data.caption_extension=.txt", "data.batch_size=4", "dry_run=true", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip


def measure(dataset: Path, run_dir: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one dry run in its own process."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "train.py", *overrides(dataset, run_dir)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"dry run failed:\n{process.stderr.read().decode()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def profile(dataset: Path) -> None:
    import cProfile
    import pstats

    sys.path.insert(0, str(ROOT))
    from sdlora.run import train
    from tests.helpers.config import compose_config

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(*overrides(dataset, Path(tmp))[:-1])
        profiler = cProfile.Profile()
        profiler.enable()
        train(cfg, tmp)
        profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "sdlora_bench")
    parser.add_argument("--profile", type=int, metavar="N", help="profile one in-process dry run on N images")
    args = parser.parse_args()
    if args.profile:
        profile(make_dataset(args.root / str(args.profile), args.profile))
        return
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    results, best = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            dataset = make_dataset(args.root / str(n), n)
            measure(dataset, Path(tmp) / f"warm{n}")  # warm-up: file cache, .pyc files
            runs = [measure(dataset, Path(tmp) / f"{n}_{i}") for i in range(args.repeat)]
            best[n] = min(s for s, _ in runs)
            results[n] = (statistics.median(s for s, _ in runs), max(m for _, m in runs))
    print(f"{'images':>8} {'median (s)':>11} {'best (s)':>9} {'µs/image':>9} {'peak RSS (MiB)':>15}")
    for n, (seconds, rss) in results.items():
        print(f"{n:>8,} {seconds:>11.2f} {best[n]:>9.2f} {seconds / n * 1e6:>9.0f} {rss:>15.0f}")
    sizes = list(results)
    for small, large in itertools.pairwise(sizes):
        (t0, m0), (t1, m1) = results[small], results[large]
        print(f"ratio {large:,}/{small:,}: time {t1 / t0:.2f}x, RSS {m1 / m0:.2f}x (sizes {large / small:.0f}x)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

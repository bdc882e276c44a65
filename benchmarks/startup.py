"""Start-up benchmark: wall time of the commands that must answer before any model is loaded, measured side by side
in one run as ratios to ``python -c "import hydra"`` (the floor of any Hydra application), plus which heavy packages
each one imported (nothing is asserted; see docs/design.md §7 for the import boundary).

    python benchmarks/startup.py [--repeat 5]

Commands: ``train.py --help``, ``train.py --cfg job``, a config error (a missing ``data.train_dir``) and
``dry_run=true`` on the bundled example data. The median of ``--repeat`` runs each.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lightning", "diffusers", "transformers", "bitsandbytes")


def commands(out: Path) -> dict[str, list[str]]:
    train = [sys.executable, "train.py"]
    dry = ["model=tiny", "data.train_dir=examples/data", "data.caption_extension=.txt", "dry_run=true"]
    return {
        'python -c "import hydra"': [sys.executable, "-c", "import hydra"],
        "train.py --help": [*train, "--help"],
        "train.py --cfg job": [*train, "--cfg", "job"],
        "config error": [*train, "model=tiny", f"data.train_dir={out / 'missing'}", f"hydra.run.dir={out / 'err'}"],
        "dry_run=true": [*train, *dry, f"hydra.run.dir={out / 'dry'}"],
    }


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, capture_output=True, check=False)
    return time.perf_counter() - start


def heavy_imports(command: list[str]) -> list[str]:
    """The heavy top-level packages a command imports (from ``python -X importtime``)."""
    result = subprocess.run([command[0], "-X", "importtime", *command[1:]], cwd=ROOT, capture_output=True, text=True)
    names = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    return [name for name in HEAVY if name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (median reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        table = commands(Path(tmp))
        for command in table.values():  # warm the file cache
            timed(command)
        medians = {name: statistics.median(timed(c) for _ in range(args.repeat)) for name, c in table.items()}
        floor = medians['python -c "import hydra"']
        print(f"{'command':<28} {'median s':>9} {'× import hydra':>15}  heavy imports")
        for name, command in table.items():
            imported = ", ".join(heavy_imports(command)) or "none"
            print(f"{name:<28} {medians[name]:>9.2f} {medians[name] / floor:>15.2f}  {imported}")


if __name__ == "__main__":
    main()

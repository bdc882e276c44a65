"""Folder preparation (the kohya_ss GUI's "Dataset Preparation → Dreambooth/LoRA Folder preparation").

Copies the instance images into ``<out>/img/<repeats>_<instance prompt> <class prompt>`` and the regularisation
images into ``<out>/reg/<reg repeats>_<class prompt>``, and creates ``<out>/log`` and ``<out>/model``: the layout
``data.train_dir=<out>/img data.reg_dir=<out>/reg`` trains on. The files directly inside each source folder are copied
(images with their caption files; training does not look into subfolders). An existing non-empty target folder is
replaced only with ``--overwrite`` (the GUI deletes it silently); a copy is made in a temporary folder first and
renamed into place, so an interrupted run leaves no half-copied folder.

    python scripts/prepare_dataset.py --out /data/run1 --instance-dir ~/photos/dog --instance-prompt sks \
        --class-prompt dog --repeats 40 --reg-dir ~/reg/dog --reg-repeats 1
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from sdlora.data.folders import list_images
from sdlora.errors import SdloraError
from sdlora.versions import version_text


@dataclass(frozen=True)
class CopyPlan:
    source: Path
    target: Path
    files: list[Path]
    images: int


def _folder_name(repeats: int, *words: str) -> str:
    name = f"{repeats}_{' '.join(w.strip() for w in words if w and w.strip())}"
    if "/" in name or "\\" in name or name.endswith((" ", ".")):
        raise SdloraError(f"the prompt gives the folder name {name!r}, which is not a valid folder name")
    return name


def _plan_copy(source: Path, target: Path, option: str, overwrite: bool) -> CopyPlan:
    source = source.expanduser().resolve()
    if not source.is_dir():
        raise SdloraError(f"{option}={str(source)!r} does not exist or is not a folder")
    images = list_images(source)
    if not images:
        raise SdloraError(f"{option}={str(source)!r} has no images (.png/.jpg/.jpeg/.webp/.bmp directly inside it)")
    resolved = target.resolve()
    if resolved == source or source in resolved.parents or resolved in source.parents:
        raise SdloraError(f"{option}={str(source)!r} overlaps the target folder {target}: choose another --out")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise SdloraError(f"{target} already exists and is not empty: pass --overwrite to replace it")
    files = sorted(p for p in source.iterdir() if p.is_file())
    return CopyPlan(source, target, files, len(images))


def _copy(plan: CopyPlan, progress: tqdm) -> None:
    """Copy into ``<target>.tmp`` and rename it into place (replacing an existing target)."""
    tmp = plan.target.with_name(f".{plan.target.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for file in plan.files:
            shutil.copy2(file, tmp / file.name)
            progress.update(1)
        if plan.target.exists():
            shutil.rmtree(plan.target)
        tmp.rename(plan.target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def prepare_folders(
    out: Path,
    instance_dir: Path,
    instance_prompt: str,
    class_prompt: str = "",
    repeats: int = 40,
    reg_dir: Path | None = None,
    reg_repeats: int = 1,
    overwrite: bool = False,
) -> list[CopyPlan]:
    """Create the kohya layout under ``out`` (see the module docstring); returns what was copied."""
    if repeats < 1 or reg_repeats < 1:
        raise SdloraError("--repeats and --reg-repeats must be ≥ 1")
    if not instance_prompt.strip():
        raise SdloraError("--instance-prompt must not be empty (it names the training folder)")
    if reg_dir is not None and not class_prompt.strip():
        raise SdloraError("--class-prompt is required with --reg-dir (it names the regularisation folder)")
    out = Path(out).expanduser()
    plans = [
        _plan_copy(
            Path(instance_dir), out / "img" / _folder_name(repeats, instance_prompt, class_prompt), "--instance-dir",
            overwrite,
        )
    ]  # fmt: skip
    if reg_dir is not None:
        plans.append(
            _plan_copy(Path(reg_dir), out / "reg" / _folder_name(reg_repeats, class_prompt), "--reg-dir", overwrite)
        )
    total = sum(len(p.files) for p in plans)
    with tqdm(total=total, desc="Copying", unit="file", disable=total < 64) as progress:
        for plan in plans:
            plan.target.parent.mkdir(parents=True, exist_ok=True)
            _copy(plan, progress)
    for name in ("log", "model"):
        (out / name).mkdir(parents=True, exist_ok=True)
    return plans


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Copy instance (and regularisation) images into kohya's <out>/img, <out>/reg layout."
    )
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument("--out", type=Path, required=True, help="destination folder (img/, reg/, log/, model/)")
    parser.add_argument("--instance-dir", type=Path, required=True, help="folder with the training images")
    parser.add_argument("--instance-prompt", required=True, help="instance token, e.g. 'sks'")
    parser.add_argument("--class-prompt", default="", help="class, e.g. 'dog' (names the reg folder)")
    parser.add_argument("--repeats", type=int, default=40, help="training repeats (kohya_ss GUI default 40)")
    parser.add_argument("--reg-dir", type=Path, default=None, help="folder with regularisation images")
    parser.add_argument("--reg-repeats", type=int, default=1, help="regularisation repeats (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing non-empty target folders")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plans = prepare_folders(
            args.out, args.instance_dir, args.instance_prompt, args.class_prompt, args.repeats, args.reg_dir,
            args.reg_repeats, args.overwrite,
        )  # fmt: skip
    except SdloraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for plan in plans:
        print(f"{plan.target}: {plan.images} images ({len(plan.files)} files) from {plan.source}")
    out = Path(args.out).expanduser()
    reg = f" data.reg_dir={out / 'reg'}" if args.reg_dir else ""
    txt = " data.caption_extension=.txt" if any(f.suffix == ".txt" for p in plans for f in p.files) else ""
    print(f"train with: python train.py data.train_dir={out / 'img'}{reg}{txt} ...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

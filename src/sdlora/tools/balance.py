"""Dataset balancing (the kohya_ss GUI's "Dataset Preparation → Dataset balancing").

For every ``<repeats>_<name>`` subfolder of a dataset folder (every subfolder with ``--insecure``), the repeats
become max(1, round(target / images)), so each concept contributes about ``target`` samples per epoch; a folder
name starting with ``{x}`` (``{2}5_dog``) multiplies that by x, and the prefix is dropped from the new name (as the
GUI does; ``{2}5_dog`` would not be a training folder). Folders are renamed to ``<repeats>_<name>``. Images are the
files training uses (png, jpg, jpeg, webp, bmp). ``--dry-run`` prints the plan and renames nothing. A rename that
would collide with another folder stops the tool before anything is renamed.

    python scripts/balance_dataset.py /data/my_character --target 400 --dry-run
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from sdlora.data.folders import list_images
from sdlora.errors import SdloraError
from sdlora.versions import version_text

_MULTIPLIER = re.compile(r"^\{(\d+(?:\.\d+)?)\}")
_REPEATS = re.compile(r"^\d+_")


@dataclass(frozen=True)
class Rename:
    folder: Path
    images: int
    repeats: int | None  # None: left as is (see note)
    new_name: str | None
    note: str = ""

    @property
    def changes(self) -> bool:
        return self.new_name is not None and self.new_name != self.folder.name


def balanced_repeats(target: int, images: int, multiplier: float = 1.0) -> int:
    """max(1, round(target / images · multiplier)) (Python's round, as the GUI)."""
    return max(1, round(target / images * multiplier))


def plan_balance(root: Path, target: int, insecure: bool = False) -> list[Rename]:
    """What balancing would do to each subfolder of ``root`` (nothing is renamed)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SdloraError(f"{root} does not exist or is not a folder")
    if target < 1:
        raise SdloraError(f"--target must be ≥ 1, got {target}")
    plan = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name, multiplier = folder.name, 1.0
        match = _MULTIPLIER.match(name)
        if match:
            multiplier, name = float(match.group(1)), name[match.end() :]
        has_repeats = _REPEATS.match(name)
        if not has_repeats and not insecure:
            plan.append(Rename(folder, 0, None, None, "skipped: no '<repeats>_' prefix (use --insecure)"))
            continue
        rest = name[has_repeats.end() :] if has_repeats else name
        images = len(list_images(folder))
        if images == 0:
            plan.append(Rename(folder, 0, None, None, "skipped: no images"))
            continue
        repeats = balanced_repeats(target, images, multiplier)
        plan.append(Rename(folder, images, repeats, f"{repeats}_{rest}"))
    _check_collisions(plan)
    return plan


def _check_collisions(plan: list[Rename]) -> None:
    finals = {r.folder.name: r.folder.name for r in plan if not r.changes}
    existing = {p.name for p in plan[0].folder.parent.iterdir()} if plan else set()
    moving = {r.folder.name for r in plan if r.changes}
    for rename in plan:
        if not rename.changes:
            continue
        clash = rename.new_name in finals or (rename.new_name in existing and rename.new_name not in moving)
        if clash:
            raise SdloraError(
                f"renaming {rename.folder} to {rename.new_name!r} would collide with another folder of the same "
                "name: merge or rename those folders first (nothing was renamed)"
            )
        finals[rename.new_name] = rename.folder.name


def apply_balance(plan: list[Rename]) -> None:
    """Rename the folders (through temporary names, so swaps such as 5_a ↔ 10_a work)."""
    moves = [r for r in plan if r.changes]
    staged = []
    for i, rename in enumerate(tqdm(moves, desc="Renaming", unit="folder", disable=len(moves) < 64)):
        tmp = rename.folder.with_name(f".sdlora-balance-{i}-{rename.folder.name}")
        rename.folder.rename(tmp)
        staged.append((tmp, rename.folder.with_name(rename.new_name)))
    for tmp, final in staged:
        tmp.rename(final)


def format_plan(plan: list[Rename], target: int) -> str:
    lines = [f"balancing to about {target} samples per folder per epoch:"]
    for r in plan:
        if r.repeats is None:
            lines.append(f"  {r.folder.name:<40} {r.note}")
        else:
            arrow = f"→ {r.new_name}" if r.changes else "(unchanged)"
            lines.append(
                f"  {r.folder.name:<40} {r.images:>5} images × {r.repeats:<4} = {r.images * r.repeats:>6}  {arrow}"
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Set each concept folder's repeats so it gives about --target samples."
    )
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument("folder", type=Path, help="the dataset folder (parent of the <repeats>_<name> folders)")
    parser.add_argument("--target", type=int, required=True, help="samples per folder per epoch (images × repeats)")
    parser.add_argument("--insecure", action="store_true", help="also balance folders without a <repeats>_ prefix")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, rename nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = plan_balance(args.folder, args.target, args.insecure)
        print(format_plan(plan, args.target))
        if args.dry_run:
            print("dry run: nothing renamed")
            return 0
        apply_balance(plan)
    except SdloraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"renamed {sum(r.changes for r in plan)} folder(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

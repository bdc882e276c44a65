"""Folder preparation (kohya_ss "Dataset Preparation"): ``python scripts/prepare_dataset.py --help``.

A thin wrapper over :mod:`sdlora.tools.prepare` (also installed as ``sdlora-prepare-dataset``).
"""

from sdlora.tools.prepare import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Merge LoRAs by SVD (kohya_ss Tools: SVD Merge LoRA): ``python scripts/svd_merge_lora.py --help``.

A thin wrapper over :mod:`sdlora.tools.svd_merge` (also installed as ``sdlora-svd-merge-lora``).
"""

from sdlora.tools.svd_merge import main

if __name__ == "__main__":
    raise SystemExit(main())

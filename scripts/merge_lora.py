"""Merge LoRAs into a checkpoint or into one LoRA (kohya_ss Tools: Merge LoRA): ``python scripts/merge_lora.py --help``.

A thin wrapper over :mod:`sdlora.tools.merge` (also installed as ``sdlora-merge-lora``).
"""

from sdlora.tools.merge import main

if __name__ == "__main__":
    raise SystemExit(main())

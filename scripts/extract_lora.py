"""Extract a LoRA from two checkpoints (kohya_ss Tools: Extract LoRA): ``python scripts/extract_lora.py --help``.

A thin wrapper over :mod:`sdlora.tools.extract` (also installed as ``sdlora-extract-lora``).
"""

from sdlora.tools.extract import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Resize a LoRA to a lower rank (kohya_ss Tools: Resize LoRA): ``python scripts/resize_lora.py --help``.

A thin wrapper over :mod:`sdlora.tools.resize` (also installed as ``sdlora-resize-lora``).
"""

from sdlora.tools.resize import main

if __name__ == "__main__":
    raise SystemExit(main())

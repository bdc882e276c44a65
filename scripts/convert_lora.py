"""Convert a LoRA between kohya and diffusers/PEFT keys: ``python scripts/convert_lora.py --help``.

A thin wrapper over :mod:`sdlora.tools.convert` (also installed as ``sdlora-convert-lora``).
"""

from sdlora.tools.convert import main

if __name__ == "__main__":
    raise SystemExit(main())

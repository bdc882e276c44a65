"""Write a kohya-format copy of a LoRA a web UI will not load: ``python scripts/fix_lora.py --help``.

A thin wrapper over :mod:`sdlora.tools.fix` (also installed as ``sdlora-fix-lora``).
"""

from sdlora.tools.fix import main

if __name__ == "__main__":
    raise SystemExit(main())

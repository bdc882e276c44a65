"""Cut a DyLoRA into fixed-rank LoRAs (kohya_ss Tools: Extract DyLoRA): ``python scripts/extract_dylora.py --help``.

A thin wrapper over :mod:`sdlora.tools.extract_dylora` (also installed as ``sdlora-extract-dylora``).
"""

from sdlora.tools.extract_dylora import main

if __name__ == "__main__":
    raise SystemExit(main())

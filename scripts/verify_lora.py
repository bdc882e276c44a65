"""Check a LoRA file (kohya_ss Tools: Verify LoRA): ``python scripts/verify_lora.py --help``.

A thin wrapper over :mod:`sdlora.tools.verify` (also installed as ``sdlora-verify-lora``).
"""

from sdlora.tools.verify import main

if __name__ == "__main__":
    raise SystemExit(main())

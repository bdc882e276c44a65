"""Extract a LyCORIS LoCon from two checkpoints (kohya_ss Tools: Extract LyCORIS LoCon):
``python scripts/extract_locon.py --help``.

A thin wrapper over :mod:`sdlora.tools.extract_locon` (also installed as ``sdlora-extract-locon``).
"""

from sdlora.tools.extract_locon import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Export the tiny test models as a checkpoint: ``python scripts/export_model.py --help``.

A thin wrapper over :mod:`sdlora.tools.export_model` (also installed as ``sdlora-export-model``).
"""

from sdlora.tools.export_model import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Merge a LyCORIS file into a checkpoint (kohya_ss Tools: Merge LyCORIS): ``python scripts/merge_lycoris.py --help``.

A thin wrapper over :mod:`sdlora.tools.merge_lycoris` (also installed as ``sdlora-merge-lycoris``).
"""

from sdlora.tools.merge_lycoris import main

if __name__ == "__main__":
    raise SystemExit(main())

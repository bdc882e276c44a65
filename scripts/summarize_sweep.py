"""One table for a Hydra sweep of sdlora runs: ``python scripts/summarize_sweep.py <sweep folder>``.

A thin wrapper over :mod:`sdlora.tools.sweep_summary` (also installed as ``sdlora-summarize-sweep``).
"""

from sdlora.tools.sweep_summary import main

if __name__ == "__main__":
    raise SystemExit(main())

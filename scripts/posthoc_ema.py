"""Post-hoc EMA: the LoRA of any EMA length from a run's snapshots: ``python scripts/posthoc_ema.py --help``.

A thin wrapper over :mod:`sdlora.tools.posthoc_ema` (also installed as ``sdlora-posthoc-ema``).
"""

from sdlora.tools.posthoc_ema import main

if __name__ == "__main__":
    raise SystemExit(main())

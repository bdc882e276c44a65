"""Dataset balancing (kohya_ss "Dataset Preparation"): ``python scripts/balance_dataset.py --help``.

A thin wrapper over :mod:`sdlora.tools.balance` (also installed as ``sdlora-balance-dataset``).
"""

from sdlora.tools.balance import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Turn a kohya_ss GUI config or an sd-scripts command into an sdlora run: ``python scripts/migrate.py --help``.

A thin wrapper over :mod:`sdlora.tools.migrate` (also installed as ``sdlora-migrate``).
"""

from sdlora.tools.migrate import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Train a LoRA: ``python train.py [group=option ...] [key=value ...]`` (``-m`` for a sweep). See README.md."""

import sys
from pathlib import Path

if __name__ == "__main__" and any(arg in ("--help", "-h") for arg in sys.argv[1:]):
    # sdlora's own page, generated from the schema, before Hydra composes anything (sdlora.config.help)
    from sdlora.config.help import print_help

    raise SystemExit(print_help(sys.argv[1:]))

import hydra
from omegaconf import DictConfig

import sdlora.config  # noqa: F401  (registers the typed schemas before Hydra composes)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from sdlora.run import hydra_task

    return hydra_task(cfg)


if __name__ == "__main__":
    if "--version" in sys.argv[1:]:  # before Hydra, which has no such flag
        from sdlora.versions import version_text

        print(version_text())
        raise SystemExit(0)
    from sdlora.config.spelling import exit_on_unknown_keys

    # kohya names and near misses: what was meant, before Hydra's own message
    exit_on_unknown_keys(sys.argv[1:], Path(__file__).resolve().parent / "conf")
    main()

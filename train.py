"""Train a LoRA: ``python train.py [group=option ...] [key=value ...]`` (``-m`` for a sweep). See README.md."""

import hydra
from omegaconf import DictConfig

import sdlora.config  # noqa: F401  (registers the typed schemas before Hydra composes)
from sdlora.config.help_speed import share_help_repository


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from sdlora.run import hydra_task

    return hydra_task(cfg)


if __name__ == "__main__":
    share_help_repository()  # --help: one config repository for Hydra's group listing
    main()

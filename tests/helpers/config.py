"""Configs as a user composes them: the real ``conf/train.yaml`` with overrides, and the resolved (typed, read-only)
config the run then works with. Everything is offline."""

from __future__ import annotations

from pathlib import Path

from sdlora.models.presets import TINY

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
EXAMPLE_DATA = ROOT / "examples" / "data"
#: The tiny presets, one per architecture: SD1.5-, SD 2.x-v- and SDXL-shaped.
TINY_MODELS = TINY


def compose_config(*overrides: str):
    """The real ``conf/train.yaml`` composed with ``overrides`` (as ``python train.py <overrides>`` would)."""
    from hydra import compose, initialize_config_dir

    import sdlora.config  # noqa: F401  (registers the schemas)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def resolved(*overrides: str):
    """The resolved :class:`~sdlora.config.schema.TrainConfig` of ``overrides`` (checks and rules applied)."""
    from sdlora.config.resolve import resolve

    return resolve(compose_config(*overrides))


def tiny_overrides(train_dir: Path | str, *extra: str, model: str = "tiny") -> list[str]:
    """Overrides for a short CPU run of a tiny model on ``train_dir`` (a few steps, every scalar logged)."""
    return [
        f"model={model}",
        f"data.train_dir={train_dir}",
        "data.caption_extension=.txt",
        "data.resolution=64",
        "data.min_bucket_reso=64",  # 64-px images also for model=sd15/sdxl loaded from tiny checkpoints
        "data.batch_size=2",
        "trainer.max_steps=4",
        "trainer.log_every_n_steps=1",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        *extra,
    ]


def data_config(**options):
    """A typed ``data`` node as the resolved config has it: the tiny families' bucket range (64–1024) and ``.txt``
    captions unless given; ``subsets`` may be dicts."""
    from sdlora.config.schema import DataConfig, SubsetConfig

    options = {"caption_extension": ".txt", "min_bucket_reso": 64, "max_bucket_reso": 1024, **options}
    options["subsets"] = [SubsetConfig(**s) if isinstance(s, dict) else s for s in options.get("subsets", [])]
    if options.get("resolution") is not None:
        options["resolution"] = str(options["resolution"])
    return DataConfig(**options)

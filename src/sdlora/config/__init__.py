"""Config schemas (registered in Hydra's ConfigStore on import) and the validation pass."""

from sdlora.config.schema import TrainConfig, register

register()

__all__ = ["TrainConfig", "register"]

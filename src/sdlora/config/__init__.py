"""Config schemas (registered in Hydra's ConfigStore on import) and the validation pass."""

from sdlora.config.resolvers import register_resolvers
from sdlora.config.schema import TrainConfig, register

register()
register_resolvers()

__all__ = ["TrainConfig", "register"]

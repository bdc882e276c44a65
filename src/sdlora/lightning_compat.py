"""Every Lightning internal sdlora relies on, in one place (supported: ``lightning>=2.2,<2.7``, pinned in
``pyproject.toml``). ``tests/unit/test_lightning_compat.py`` checks each of them, so a Lightning upgrade that changes
one fails there, loudly, instead of somewhere in a run.

- the training loop's batch progress (``trainer.fit_loop.epoch_loop.batch_progress``): how many batches of the
  current epoch were processed, and whether the batch that just ended was the epoch's last;
- ``FSDPStrategy._setup_model`` (where Lightning wraps the model in FSDP), overridden through
  :class:`FSDPModelSetup`, whose subclasses implement the public-named :meth:`FSDPModelSetup.wrap_model`;
- ``lightning.fabric.utilities.optimizer._optimizer_to_device`` (moving a restored optimizer state to the device);
- the logger connector's ``should_update_logs``: whether the metrics of the current training batch are written
  (every ``log_every_n_steps`` optimizer steps), so that the module calls ``self.log`` only then.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy


def _batch_progress(trainer: Any) -> Any:
    return trainer.fit_loop.epoch_loop.batch_progress


def batches_processed(trainer: Any) -> int:
    """Batches of the current epoch the training loop has processed (a resumed epoch counts from its start)."""
    return int(_batch_progress(trainer).current.processed)


def is_last_batch(trainer: Any) -> bool:
    """Whether the batch that just ended is the last of its epoch."""
    return bool(_batch_progress(trainer).is_last_batch)


def logs_this_step(trainer: Any) -> bool:
    """Whether Lightning's logger writes the metrics logged during the current training batch (checked before the
    batch's optimizer step: every ``trainer.log_every_n_steps`` steps, and when training stops)."""
    return bool(trainer._logger_connector.should_update_logs)


def optimizer_to_device(optimizer: Any, device: Any) -> None:
    """Move an optimizer's state tensors to ``device`` (after loading a state)."""
    from lightning.fabric.utilities.optimizer import _optimizer_to_device

    _optimizer_to_device(optimizer, device)


class FSDPModelSetup(FSDPStrategy):
    """Lightning's FSDP strategy with its model-wrapping step handed to :meth:`wrap_model`."""

    def _setup_model(self, model: Any) -> Any:
        return self.wrap_model(model)

    def wrap_model(self, model: Any) -> Any:
        """Wrap ``model`` in FSDP (called by Lightning when the strategy sets up the model)."""
        raise NotImplementedError

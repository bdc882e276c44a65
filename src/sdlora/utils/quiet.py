"""Silence known-harmless third-party log lines (docs/design.md §5.2) so that real warnings stand out.

Filters sit on the loggers the lines come from (a filter on a parent logger does not see its children's records)
and on the root handlers (Hydra's console and ``train.log``).
"""

from __future__ import annotations

import logging
import warnings

_HARMLESS = (
    "should be kept in float32",  # diffusers, when a model is cast with .to(dtype)
    "Failed to load CPU gemm_4bit_forward",  # bitsandbytes without the `kernels` package (never install it)
    "requires torchvision",  # transformers image processors (not used)
    "litlogger",  # Lightning's advertising tip
    "litmodels",
)
_ORIGINS = (
    "diffusers.models.modeling_utils",
    "bitsandbytes",
    "bitsandbytes.backends.cpu.ops",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "transformers.utils.import_utils",
)
_WARNINGS = (
    r".*LeafSpec.*",
    r".*does not have many workers.*",
    r"Found \d+ module\(s\) in eval mode.*",  # the frozen base model is in eval mode on purpose
    r"Total length of `list` across ranks is zero.*",  # no validation batches during fit (validation at the end)
    r"Paged optimizers are not supported on CPU.*",  # bitsandbytes; sdlora.optim.rules warns naming the fallback
    r".*`training_step` returned `None`.*",  # trainer.skip_nonfinite: sdlora logs each skipped batch itself
)


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _HARMLESS)


def _add_filter(target: logging.Logger | logging.Handler) -> None:
    if not any(isinstance(f, _DropHarmless) for f in target.filters):
        target.addFilter(_DropHarmless())


def quiet_third_party() -> None:
    """Install the filters (idempotent); call before importing diffusers/bitsandbytes/lightning."""
    for name in _ORIGINS:
        _add_filter(logging.getLogger(name))
    for handler in logging.getLogger().handlers:
        _add_filter(handler)
    for pattern in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


#: Lightning's start-up and end lines, shown with ``verbose=true`` only: the devices it found (a CPU run says "GPU
#: available: False" and "TPU available: False"), and why ``fit`` ended (sdlora's progress and saves say it).
_LIGHTNING_CHATTER = ("GPU available:", "TPU available:", "HPU available:", "IPU available:", "LOCAL_RANK:",
                      "`Trainer.fit` stopped:")  # fmt: skip


class _DropLightningChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(text) for text in _LIGHTNING_CHATTER)


def tidy_lightning_logging(verbose: bool = False) -> None:
    """``import lightning`` adds its own console handler; drop it when the root logger (Hydra's) already prints.
    Unless ``verbose``, Lightning's device and end-of-fit lines are left out (:data:`_LIGHTNING_CHATTER`)."""
    chatter = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    for existing in [f for f in chatter.filters if isinstance(f, _DropLightningChatter)]:
        chatter.removeFilter(existing)
    if not verbose:
        chatter.addFilter(_DropLightningChatter())
    if logging.getLogger().hasHandlers():
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)

"""Sample images during training [kohya: --sample_prompts, --sample_every_n_steps/epochs, --sample_at_first,
--sample_sampler] (docs/kohya.md §12).

Triggers: every ``sample.every_n_steps`` optimizer steps, at the end of every ``sample.every_n_epochs``-th epoch
(both may be set, unlike kohya, where the epoch trigger disables the step trigger; a step that fires both samples
once), and with ``sample.at_start`` before the first step. Images are made on the main process with the LoRA in eval
mode (no dropout, unlike kohya), under the training precision's autocast, and every RNG stream is restored afterwards,
so sampling never changes training. Each image goes to ``<run folder>/sample/<name>_<step>_<idx>_<seed>.png``
(step 6 digits, prompt index 2 digits) and to TensorBoard (or W&B) as ``sample/<idx>``. With ``ema.use_for_eval`` the
images are made with the EMA weights, with a schedule-free optimizer at its evaluation point
(:mod:`sdlora.callbacks.eval_weights`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch

from sdlora.callbacks.eval_weights import evaluation_weights
from sdlora.callbacks.steps import OptimizerSteps
from sdlora.sampling.prompts import SamplePrompt, load_prompts
from sdlora.state.rng import preserved_rng
from sdlora.utils.atomic import atomic_write

if TYPE_CHECKING:
    from sdlora.assemble import Run

log = logging.getLogger("sdlora")


class SampleImages(L.Callback):
    def __init__(
        self,
        prompts: list[SamplePrompt],
        run_dir: Path,
        output_name: str,
        *,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        at_start: bool = False,
        sampler: str = "ddim",
        default_size: tuple[int, int] = (512, 512),
        seed: int = 0,
        zero_terminal_snr: bool = False,
    ) -> None:
        self.prompts = prompts
        self.folder = Path(run_dir) / "sample"
        self.output_name = output_name
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.at_start = at_start
        self.sampler = sampler
        self.default_size = default_size
        self.seed = seed
        self.zero_terminal_snr = zero_terminal_snr
        self.written: list[Path] = []
        self._steps = OptimizerSteps()
        self._sampled_at: int | None = None  # the step of the last sampling
        self._pipeline: Any = None
        self._logged_prompts = False

    @classmethod
    def from_run(cls, run: Run) -> SampleImages:
        config = run.config
        prompts, warnings = load_prompts(config.sample.prompts)
        for warning in warnings:
            log.warning("%s", warning)
        size = (run.family.default_resolution, run.family.default_resolution)
        s = config.sample
        return cls(
            prompts, run.run_dir, config.save.output_name, every_n_steps=s.every_n_steps,
            every_n_epochs=s.every_n_epochs, at_start=s.at_start, sampler=s.sampler, default_size=size,
            seed=config.seed, zero_terminal_snr=config.loss.zero_terminal_snr,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps.start(trainer)
        if self.at_start:
            self.sample(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not self._steps.stepped(trainer):
            return  # gradient accumulation: no optimizer step yet
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0:
            self.sample(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0 and not trainer.should_stop:
            self.sample(trainer, pl_module)

    # --------------------------------------------------------------------------------------------- sampling
    def sample(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Make every prompt's image at the current step (once per step), on the main process. Under a strategy
        that shards the frozen model (trainer=fsdp) every process runs the same sampling, inside the model's forward,
        and the main process writes the images."""
        step = trainer.global_step
        if self._sampled_at == step or trainer.fast_dev_run:
            return
        self._sampled_at = step
        run_in_model = getattr(trainer.strategy, "run_in_model", None)

        def all_prompts() -> None:
            for index, prompt in enumerate(self.prompts):
                self._one(trainer, pl_module, step, index, prompt)

        if trainer.is_global_zero or run_in_model is not None:
            generators = {"module": getattr(pl_module, "generator", None)}
            with (
                preserved_rng(generators),
                evaluation_weights(trainer, pl_module),  # schedule-free evaluation point, EMA weights
                pl_module.network.evaluating(),
                pl_module.host_parts_here(),  # the VAE and text encoders, when they wait in host memory
                torch.no_grad(),
                trainer.precision_plugin.forward_context(),
            ):
                if run_in_model is not None:
                    run_in_model(all_prompts)
                else:
                    all_prompts()
            if trainer.is_global_zero:
                log.info("Sample images of step %d in %s", step, self.folder)
        trainer.strategy.barrier("sdlora.sample_images")

    def _one(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, index: int, prompt: SamplePrompt):
        from sdlora.sampling.generate import generate
        from sdlora.sampling.schedulers import build_sampler

        family, components = pl_module.family, pl_module.components
        scheduler = build_sampler(prompt.sampler or self.sampler, components.prediction_type, self.zero_terminal_snr)
        if self._pipeline is None:
            self._pipeline = family.sample_pipeline(components, scheduler)
            self._pipeline.set_progress_bar_config(disable=True)
        seed = prompt.seed if prompt.seed is not None else self.seed + index
        size = (prompt.width or self.default_size[0], prompt.height or self.default_size[1])
        image = generate(family, components, self._pipeline, prompt, size, seed, scheduler)
        if not trainer.is_global_zero:
            return
        path = self.folder / f"{self.output_name}_{step:06d}_{index:02d}_{seed}.png"
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
        self.written.append(path)
        self._log(trainer, step, index, prompt, np.asarray(image))

    def _log(self, trainer: L.Trainer, step: int, index: int, prompt: SamplePrompt, array: np.ndarray) -> None:
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(logger, "log_image") and not hasattr(experiment, "add_image"):  # W&B (logger=wandb)
                logger.log_image(key=f"sample/{index:02d}", images=[array], step=step, caption=[prompt.prompt])
                continue
            if experiment is None or not hasattr(experiment, "add_image"):
                continue
            experiment.add_image(f"sample/{index:02d}", array, global_step=step, dataformats="HWC")
            if not self._logged_prompts:
                text = prompt.prompt + (f" — negative: {prompt.negative_prompt}" if prompt.negative_prompt else "")
                experiment.add_text(f"sample/{index:02d}/prompt", text, global_step=step)
        if index == len(self.prompts) - 1:
            self._logged_prompts = True

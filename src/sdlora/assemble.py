"""The typed run: everything known about a training run before the model is loaded, built once from the resolved
config (:func:`sdlora.config.resolve.resolve`) and handed to the factories of :mod:`sdlora.builders`.

resolved config → family adapter → resolution → data plan (scan, buckets, repeats, steps) → validation images →
schedule over the real horizon → resume point (its settings compared with this run's) → run facts.
Nothing here imports Lightning, diffusers or transformers (docs/design.md §7): ``dry_run=true`` stops after it.
"""

from __future__ import annotations

import logging
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdlora import __version__
from sdlora.config.schema import TrainConfig
from sdlora.data.build import TrainingData
from sdlora.data.held_out import ValidationData
from sdlora.errors import SdloraError
from sdlora.models.family import ModelFamily
from sdlora.state.resume import ResumePoint

log = logging.getLogger("sdlora")


@dataclass(frozen=True)
class RunFacts:
    """What a run records about itself besides its options (kohya's ``ss_session_id``, ``ss_training_started_at``,
    the base model's SHA-256, the number of processes). A resumed run keeps the session and start time of the run
    it continues."""

    session_id: int
    started_at: float
    version: str
    world_size: int
    model_hash: Future | None = None  # SHA-256 of a single-file base model, computed while the run starts

    def model_sha256(self) -> str | None:
        return self.model_hash.result() if self.model_hash is not None else None

    def session(self) -> dict[str, Any]:
        """What a training state keeps of these facts (:mod:`sdlora.callbacks.save_state`)."""
        return {"session_id": self.session_id, "training_started_at": self.started_at}


@dataclass(frozen=True)
class Run:
    config: TrainConfig  # resolved, read-only
    run_dir: Path
    family: ModelFamily
    resolution: tuple[int, int]  # (W, H) of data.resolution
    data: TrainingData
    validation: ValidationData | None
    fingerprint: dict[str, Any]  # the settings a resume must share (sdlora.state.fingerprint)
    resume: ResumePoint | None
    facts: RunFacts

    @property
    def total_steps(self) -> int:
        return self.data.plan.length.total_steps


def assemble(config: TrainConfig, run_dir: str | Path, hash_model: bool = True) -> Run:
    """The typed run for a resolved ``config`` writing into ``run_dir`` (see the module docstring);
    ``hash_model=False`` skips hashing a single-file base model (a plan that never trains: the web UI's "Plan")."""
    from sdlora.data.build import build_training_data
    from sdlora.data.held_out import validation_from_config
    from sdlora.data.resolution import parse_resolution
    from sdlora.distributed.world import planned_world_size
    from sdlora.models.family import make_family
    from sdlora.state.fingerprint import fingerprint

    family = make_family(config.model, config.data.weighted_captions)
    resolution = parse_resolution(config.data.resolution)
    t = config.trainer
    world_size = planned_world_size(t)
    data = build_training_data(
        config.data, resolution, config.seed, t.accumulate_grad_batches, t.max_steps, t.max_epochs,
        prior_loss_weight=config.loss.prior_loss_weight, validation_split=config.validation.split,
        validation_seed=config.validation.seed, world_size=world_size, masked=config.loss.masked,
    )  # fmt: skip
    validation = validation_from_config(config, data.held_out, resolution)
    _check_schedule(config, data.plan.length.total_steps)
    prints = fingerprint(config, data.plan)
    resume = _resume_point(config, prints, Path(run_dir))
    facts = _facts(config, world_size, resume, hash_model)
    return Run(config, Path(run_dir), family, resolution, data, validation, prints, resume, facts)


def _check_schedule(config: TrainConfig, total_steps: int) -> None:
    """The schedule built once over the run's real horizon (e.g. warm-up + decay must fit in it)."""
    from sdlora.optim.checks import schedule_problems

    problems = schedule_problems(config.optimizer, config.scheduler, total_steps)
    if problems:
        raise SdloraError(f"the configuration has {len(problems)} problem(s):", problems)


def _resume_point(config: TrainConfig, prints: dict[str, Any], run_dir: Path) -> ResumePoint | None:
    """The state ``resume`` names (a requeued SLURM job: ``resume=auto``, its own newest state), compared with this
    run's settings; None to start from the beginning."""
    from sdlora.signals import requeued_by_slurm
    from sdlora.state.resume import AUTO, locate, resume_point

    value = config.resume
    if value is None and requeued_by_slurm():
        log.info("This SLURM job was requeued: it resumes from the newest state in %s, if any (resume=auto)", run_dir)
        value = AUTO
    if not value:
        return None
    path = locate(value, run_dir)
    if path is None:
        log.info("resume=auto: no training state in %s yet; training from the beginning", run_dir)
        return None
    return resume_point(path, prints, config.resume_allow_changes)


def _facts(config: TrainConfig, world_size: int, resume: ResumePoint | None, hash_model: bool = True) -> RunFacts:
    from sdlora.utils.hashing import file_sha256

    session = resume.info.get("session", {}) if resume is not None else {}
    session_id = int(session.get("session_id", random.randint(0, 2**32)))
    started_at = float(session.get("training_started_at", time.time()))
    model_hash = _hash_in_background(config.model.pretrained, file_sha256) if hash_model else None
    return RunFacts(session_id, started_at, __version__, world_size, model_hash)


def _hash_in_background(location: str | None, hasher) -> Future | None:
    """SHA-256 of a single-file base model, computed while training starts (kohya's ss_new_sd_model_hash)."""
    if not location or not Path(location).expanduser().is_file():
        return None
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdlora-hash")
    future = executor.submit(hasher, Path(location).expanduser())
    executor.shutdown(wait=False)
    return future


def validation_summary(run: Run) -> dict[str, Any]:
    """The validation part of the data plan (images, timesteps, schedule)."""
    from sdlora.diffusion.eval_noise import validation_timesteps

    validation, config = run.validation, run.config
    if validation is None:
        return {"images": 0, "text": "off (set validation.dir or validation.split to get val/loss)"}
    timesteps = validation_timesteps(config.loss.min_timestep, config.loss.max_timestep,
                                     config.validation.num_timesteps)  # fmt: skip
    every = config.validation.every_n_steps
    when = f"every {every} steps and at the end" if every else "at the end of training"
    text = f"{validation.num_images} images from {validation.source} at timesteps {timesteps}, {when}"
    paths = [str(r.path) for r in validation.dataset.records]
    return {"images": validation.num_images, "paths": paths, "timesteps": timesteps, "every_n_steps": every,
            "text": text}  # fmt: skip

"""Value and combination checks of ``save.*``, ``sample.*`` and ``resume`` (collected by ``config.validate``)."""

from __future__ import annotations

from omegaconf import DictConfig

from sdlora.errors import SdloraError

#: The ``sample.*`` options that make sample images (each needs a prompt file).
SAMPLE_TRIGGERS = ("every_n_steps", "every_n_epochs", "at_start")
_SAVE_COUNTS = ("every_n_steps", "every_n_epochs", "last_n_steps", "last_n_epochs", "last_n_steps_state",
                "last_n_epochs_state")  # fmt: skip


def check_save(save: DictConfig, problems: list[str]) -> None:
    for key in _SAVE_COUNTS:
        if save[key] is not None and save[key] < 1:
            problems.append(f"save.{key} must be ≥ 1 or null (off), got {save[key]}")
    problems += [message for _, message in save_needs(save)]


def save_needs(save) -> list[tuple[str, str]]:
    """(key, message) for each ``save.*`` option that is set but acts only with another that is not. kohya passes
    such options and ignores them; sdlora's check names them, and ``sdlora-migrate`` leaves them out."""
    every_any = save.every_n_steps or save.every_n_epochs
    out = []
    if save.last_n_steps and not every_any:
        out.append(("save.last_n_steps", "save.last_n_steps needs save.every_n_steps or save.every_n_epochs (it "
                    "prunes those saves)"))  # fmt: skip
    if save.last_n_epochs and not save.every_n_epochs:
        out.append(("save.last_n_epochs", "save.last_n_epochs needs save.every_n_epochs (it prunes the epoch saves)"))
    for key in ("last_n_steps_state", "last_n_epochs_state"):
        if getattr(save, key) and not save.state:
            out.append((f"save.{key}", f"save.{key} needs save.state=true"))
    if save.last_n_steps_state and not every_any:
        out.append(("save.last_n_steps_state", "save.last_n_steps_state needs save.every_n_steps or "
                    "save.every_n_epochs"))  # fmt: skip
    if save.last_n_epochs_state and not save.every_n_epochs:
        out.append(("save.last_n_epochs_state", "save.last_n_epochs_state needs save.every_n_epochs"))
    return out


def sample_needs(sample) -> list[tuple[str, str]]:
    """(keys, message) as :func:`save_needs` for ``sample.*``: image triggers without a prompt file, or a prompt
    file no trigger uses (the keys comma-separated)."""
    set_triggers = [f"sample.{k}" for k in SAMPLE_TRIGGERS if getattr(sample, k)]
    if set_triggers and not sample.prompts:
        return [(",".join(set_triggers), "sample.every_n_steps/every_n_epochs/at_start need sample.prompts (a prompt "
                 "file)")]  # fmt: skip
    if sample.prompts and not set_triggers:
        return [("sample.prompts", "sample.prompts is set but no sample image would be made: set "
                 "sample.every_n_steps, sample.every_n_epochs or sample.at_start=true")]  # fmt: skip
    return []


def check_sample(sample: DictConfig, problems: list[str]) -> None:
    from sdlora.sampling.prompts import load_prompts
    from sdlora.sampling.schedulers import canonical, unknown_sampler_message

    for key in ("every_n_steps", "every_n_epochs"):
        if sample[key] is not None and sample[key] < 1:
            problems.append(f"sample.{key} must be ≥ 1 or null (off), got {sample[key]}")
    problems += [message for _, message in sample_needs(sample)]
    if canonical(sample.sampler) is None:
        problems.append(unknown_sampler_message(sample.sampler, "sample.sampler="))
    if not sample.prompts:
        return
    try:
        prompts, _ = load_prompts(sample.prompts)
    except SdloraError as exc:
        problems.append(str(exc))
        return
    for index, prompt in enumerate(prompts):
        if prompt.sampler is not None and canonical(prompt.sampler) is None:
            problems.append(unknown_sampler_message(prompt.sampler, f"sample.prompts prompt {index + 1}: --ss "))


def check_resume_option(cfg: DictConfig, problems: list[str]) -> None:
    from sdlora.state.resume import AUTO, locate

    if cfg.resume and cfg.resume != AUTO:
        try:
            locate(cfg.resume)
        except SdloraError as exc:
            problems.append(str(exc))

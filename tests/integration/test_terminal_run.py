"""A short run as a new user starts it: quiet output (no Lightning model summary or device lines), progress over the
run's steps, and every step logged to TensorBoard without setting trainer.log_every_n_steps."""

from __future__ import annotations

from tests.helpers.cli import run_train_py
from tests.integration.test_resume import scalars


def _overrides(data, *extra: str) -> list[str]:
    return ["model=tiny", f"data.train_dir={data}", "data.caption_extension=.txt", "data.resolution=64",
            "data.batch_size=2", "trainer.max_steps=3", "trainer.accelerator=cpu", "save.every_n_steps=2",
            *extra]  # fmt: skip


def test_a_short_run_is_quiet_shows_its_progress_and_logs_every_step(example_data, tmp_path):
    output = run_train_py(_overrides(example_data), tmp_path / "run")
    for chatter in ("GPU available", "TPU available", "FLOPs", "Total params", "model summary"):
        assert chatter not in output, chatter
    assert "Progress: step 3/3 (100%)" in output  # not a terminal: plain progress lines
    assert output.index("last-step00000002.safetensors") < output.index("Progress: step 3/3")  # saves as they happen
    assert sorted(scalars(tmp_path / "run", "loss/current")) == [0, 1, 2]  # first and last step included


def test_verbose_brings_lightnings_lines_back(example_data, tmp_path):
    output = run_train_py(_overrides(example_data, "verbose=true", "trainer.max_steps=1"), tmp_path / "run")
    assert "GPU available" in output and "Params" in output

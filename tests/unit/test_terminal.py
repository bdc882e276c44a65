"""The terminal as a user sees it: the generated ``--help`` page, the run's progress line, the log interval, quiet
Lightning lines, and messages that name the real cause."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from types import SimpleNamespace

import pytest

from sdlora.errors import SdloraError
from tests.helpers.config import EXAMPLE_DATA, ROOT, compose_config, resolved


def test_help_page_is_generated_from_the_schema_and_answers_before_hydra():
    result = subprocess.run([sys.executable, "-X", "importtime", "train.py", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert page.startswith("sdlora — LoRA training for Stable Diffusion")
    assert page.count("  python train.py ") >= 3  # three examples (and the "more" lines)
    for group in ("model", "network", "optimizer", "scheduler", "precision"):
        assert f"\n  {group} " in page
    assert "sd15*, sd2, sd2_v, sdxl, tiny, tiny_sd2_v, tiny_sdxl" in page
    assert "[network_dim]" in page and "network.rank" in page and "(default 8)" in page
    assert "optimizer.lr" in page and "[learning_rate]" in page
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert not imported & {"torch", "lightning", "diffusers"}, "--help must answer without the heavy libraries"


def test_help_all_lists_every_key_and_a_new_schema_key_appears_without_help_code(monkeypatch):
    from sdlora.config import docs, help
    from sdlora.config.schema import TrainConfig

    page = help.help_text(all_keys=True)
    for key in docs.schema_keys():
        if key.kind != "node":
            assert f"  {key.key} " in page or f"  {key.key}\n" in page, key.key

    @dataclasses.dataclass
    class Extended(TrainConfig):
        brand_new: int = 3  # a key added to the schema tomorrow [brand_new_kohya]

    monkeypatch.setattr("sdlora.config.schema.TrainConfig", Extended)
    page = " ".join(help.help_text(all_keys=True).split())  # as one line, whatever the terminal's width
    assert "brand_new a key added to the schema tomorrow [brand_new_kohya] (default 3)" in page


def test_schema_docs_come_from_the_field_comments():
    from sdlora.config.docs import group_options, schema_keys

    keys = {k.key: k for k in schema_keys()}
    rank = keys["network.rank"]
    assert (rank.kind, rank.nullable, rank.default) == ("int", True, 8) and "[network_dim]" in rank.doc
    assert keys["data.cache_latents"].choices == ("none", "memory", "disk")
    assert keys["data.caption_extension"].heading == "captions"
    assert keys["optimizer"].kind == "node" and keys["data.subsets"].kind == "list"
    assert keys["trainer.log_every_n_steps"].default is None and keys["verbose"].default is False
    undocumented = [k for k, v in keys.items() if not v.doc and not v.heading]
    assert len(undocumented) < 15, undocumented  # Lightning's own trainer flags and internal names only
    assert [o.name for o in group_options()["model"]] == [
        "sd15",
        "sd2",
        "sd2_v",
        "sdxl",
        "tiny",
        "tiny_sd2_v",
        "tiny_sdxl",
    ]
    assert "hparams_search" not in group_options() and "hydra" not in group_options()


# ------------------------------------------------------------------------------------------------- progress
def test_log_interval_adapts_to_the_run_length():
    from sdlora.builders import log_interval

    assert [log_interval(None, n) for n in (1, 20, 199, 200, 650, 1600, 100_000)] == [1, 1, 1, 2, 6, 10, 10]
    assert log_interval(7, 20) == 7


def test_progress_line_and_durations():
    from sdlora.callbacks.progress import format_duration, progress_line

    assert format_duration(65) == "1:05" and format_duration(3725) == "1:02:05"
    line = progress_line(20, 60, 10.0, {"epoch": 1, "loss/average": 0.123456})
    assert line == "step 20/60 (33%), 10 it/s, 0:04 left, epoch 1, loss/average 0.1235"


def test_progress_is_logged_by_tenths_of_the_run_when_not_on_a_terminal(caplog):
    from sdlora.callbacks.progress import RunProgressBar

    bar = RunProgressBar(total_steps=20, interactive=False)
    trainer = SimpleNamespace(global_step=5, current_epoch=0, progress_bar_metrics={"loss/average": 0.5})
    bar.on_train_start(trainer, None)  # a resumed run: starts at step 5 of 20
    with caplog.at_level(logging.INFO, logger="sdlora"):
        for step in range(6, 21):
            trainer.global_step = step
            bar.on_train_batch_end(trainer, None, None, None, step)
            bar.on_train_batch_end(trainer, None, None, None, step)  # accumulation: the same step twice
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Progress")]
    assert lines[0].startswith("Progress: step 6/20 (30%)") and lines[-1].startswith("Progress: step 20/20 (100%)")
    assert len(lines) == len(set(lines)) == 8  # each tenth once (30% … 100%): steps 6, 8, 10, …, 20


def test_lightning_device_lines_are_quiet_unless_verbose():
    from sdlora.utils.quiet import tidy_lightning_logging

    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "GPU available: False, used: False", (), None)
    tidy_lightning_logging(verbose=False)
    assert not logger.filter(record)
    tidy_lightning_logging(verbose=True)
    assert logger.filter(record)
    tidy_lightning_logging(verbose=False)


# ------------------------------------------------------------------------------------------------- messages
def test_dry_run_plans_without_pretrained_weights():
    for model in ("sd15", "sdxl"):
        config = resolved(f"model={model}", f"data.train_dir={EXAMPLE_DATA}", "dry_run=true")
        assert config.model.pretrained is None
    with pytest.raises(SdloraError, match=r"model.pretrained is required.*dry_run=true plans without one"):
        resolved("model=sd15", f"data.train_dir={EXAMPLE_DATA}")


def test_bucket_step_error_names_the_preset_not_a_class():
    from sdlora.config.checks import check_config
    from sdlora.config.resolve import typed_config

    cfg = typed_config(compose_config("model=sdxl", f"data.train_dir={EXAMPLE_DATA}", "data.bucket_reso_steps=48"))
    with pytest.raises(SdloraError) as info:
        check_config(cfg)
    assert "multiple of 32 for model=sdxl" in str(info.value) and "Family" not in str(info.value)


def test_unreadable_images_say_why(tmp_path):
    from sdlora.data.images import ImageProblem, probe_image

    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ImageProblem, match=r"empty\.png: empty file \(0 bytes\)"):
        probe_image(tmp_path / "empty.png")
    with pytest.raises(ImageProblem) as info:
        probe_image(tmp_path / "junk.png")
    assert "cannot be read as an image" in str(info.value) and "BytesIO" not in str(info.value)


def _plan(train_dir):
    from sdlora.assemble import assemble

    return assemble(resolved("model=tiny", f"data.train_dir={train_dir}", "dry_run=true"), train_dir.parent / "run")


def test_a_folder_of_unreadable_images_says_they_were_unreadable(tmp_path):
    folder = tmp_path / "ds" / "10_thing"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(b"")
    (folder / "b.jpg").write_bytes(b"garbage")
    with pytest.raises(SdloraError) as info:
        _plan(tmp_path / "ds")
    message = str(info.value)
    assert "all 2 image file(s) were skipped as unreadable" in message and "a.png: empty file" in message
    assert "images must be .png" not in message


def test_the_image_folder_itself_as_train_dir_points_to_its_parent(tmp_path):
    import shutil

    folder = tmp_path / "ds" / "10_sks dog"
    folder.mkdir(parents=True)
    shutil.copy(next(EXAMPLE_DATA.rglob("*.png")), folder / "001.png")
    with pytest.raises(SdloraError) as info:
        _plan(folder)
    assert f"give its parent folder, data.train_dir='{tmp_path / 'ds'}'" in str(info.value)
    assert "move them into a subfolder" not in str(info.value)


def test_a_run_whose_only_state_is_damaged_is_named_damaged(tmp_path):
    from sdlora.state.resume import locate

    state = tmp_path / "run" / "last-state"
    state.mkdir(parents=True)
    for name in ("state.json", "training_state.pt", "lora.safetensors"):
        (state / name).write_text("{not json")
    with pytest.raises(SdloraError) as info:
        locate(str(tmp_path / "run"))
    assert "are damaged, none can be used" in str(info.value) and "last-state" in str(info.value)
    assert "there is no state folder" not in str(info.value)

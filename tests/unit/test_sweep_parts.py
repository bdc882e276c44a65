"""Sweep pieces without running a sweep: resolvers, alpha_ratio, the run record, the job's metric, TensorBoard
hyperparameters, and the sweep summary over job folders made of real records and real TensorBoard event files."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from omegaconf import OmegaConf
from PIL import Image

from sdlora.config.checks import check_config
from sdlora.config.resolvers import dirname, if_null
from sdlora.errors import SdloraError
from sdlora.sweep.hparams import final_metrics, run_hparams
from sdlora.sweep.job import job_metric, multirun_problems
from sdlora.sweep.record import RunRecord, read_record
from sdlora.tools import sweep_summary
from tests.helpers.config import CONF_DIR, compose_config, resolved


# --- resolvers and derived options --------------------------------------------------------------------------------
def test_if_null_resolver_in_the_optuna_search_config():
    assert if_null(None, 0.2, 0.0) == 0.2 and if_null("/val", 0.2, 0.0) == 0.0
    assert compose_config("hparams_search=optuna").validation.split == 0.2
    assert compose_config("hparams_search=optuna", "validation.dir=/tmp").validation.split == 0.0
    assert compose_config("hparams_search=optuna", "validation.split=0.5").validation.split == 0.5


def test_optuna_search_space_is_in_the_config():
    params = OmegaConf.load(CONF_DIR / "hparams_search" / "optuna.yaml").hydra.sweeper.params
    assert set(params) == {"optimizer.lr", "network.rank", "network.alpha_ratio", "loss.min_snr_gamma",
                           "loss.noise_offset"}  # fmt: skip


def test_dirname_keeps_short_names_and_cuts_long_ones_uniquely():
    assert dirname("network.rank=8,optimizer.lr=0.0001") == "network.rank=8,optimizer.lr=0.0001"
    assert dirname("data.subsets=a/b") == "data.subsets=a_b"
    a, b = dirname("x" * 300 + "1"), dirname("x" * 300 + "2")
    assert len(a.encode()) <= 180 and len(b.encode()) <= 180 and a != b
    assert len(dirname("é" * 200).encode()) <= 180


def test_alpha_ratio_sets_alpha_from_the_rank(small_dataset):
    cfg = resolved("model=tiny", f"data.train_dir={small_dataset}", "network.rank=16", "network.alpha_ratio=0.25")
    assert cfg.network.alpha == 4.0
    plain = resolved("model=tiny", f"data.train_dir={small_dataset}", "network.rank=16", "network.alpha=3")
    assert plain.network.alpha == 3.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("network.alpha_ratio=0", "network.alpha_ratio must be > 0"),
        ("trainer.strategy=deepspeed", "trainer.strategy=deepspeed is not supported"),
        ("trainer=fsdp precision=full_fp16", "precision=full_fp16 .* cannot be combined with trainer=fsdp"),
        ("trainer=fsdp model.compile=true", "model.compile=true cannot be combined with trainer=fsdp"),
        ("trainer.devices=zero", "trainer.devices='zero'"),
    ],
)
def test_sweep_and_scale_options_are_validated(override, message):
    with pytest.raises(SdloraError, match=message):
        check_config(compose_config("model=tiny", *override.split()))


def test_several_devices_per_job_in_a_local_sweep_are_refused(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    (problem,) = multirun_problems(compose_config("trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"))
    assert "hydra/launcher=submitit_slurm" in problem
    assert multirun_problems(compose_config("trainer.devices=1")) == []
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")  # srun started one task per device: fine
    assert multirun_problems(compose_config("trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu")) == []


# --- run record and metric ------------------------------------------------------------------------------------------
def test_job_metric_prefers_the_validation_loss():
    assert job_metric({"loss": 0.5, "val_loss": 0.4}) == (0.4, "val/loss")
    assert job_metric({"loss": 0.5}) == (0.5, "loss/average")
    assert job_metric({"total_steps": 3}) == (None, None)


def test_run_record_lifecycle(tmp_path):
    record = RunRecord(tmp_path, ["network.rank=8"], job_num=3)
    record.start()
    assert read_record(tmp_path)["status"] == "running"
    summary = {
        "steps": 4,
        "total_steps": 4,
        "loss": 0.25,
        "val_loss": float("nan"),
        "files": [str(tmp_path / "a-step2"), str(tmp_path / "a")],
    }
    record.completed(summary, 0.25, "loss/average")
    data = read_record(tmp_path)
    assert data["status"] == "completed" and data["job_num"] == 3 and data["overrides"] == ["network.rank=8"]
    assert data["val_loss"] is None  # JSON has no NaN
    assert data["lora"] == str(tmp_path / "a") and data["time_s"] >= 0
    json.loads((tmp_path / "summary.json").read_text())  # strict JSON

    other = RunRecord(tmp_path / "b", [])
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        other.failed(exc, user_error=False)
    data = read_record(tmp_path / "b")
    assert data["status"] == "failed" and data["error_type"] == "RuntimeError" and "boom" in data["traceback"]
    silent = RunRecord(tmp_path / "c", [], write=False)
    silent.start()
    assert read_record(tmp_path / "c") is None


def test_hparams_hold_the_key_values_and_every_override():
    cfg = compose_config("model=tiny", "network.rank=16", "loss.noise_offset=0.05")
    params = run_hparams(cfg, ["model=tiny", "network.rank=16", "loss.noise_offset=0.05", "hydra.verbose=true"])
    assert params["network.rank"] == 16 and params["loss.noise_offset"] == 0.05 and params["model"] == "tiny"
    assert params["loss.min_snr_gamma"] == "null" and params["optimizer.lr"] == 1e-4
    assert not any(k.startswith("hydra") for k in params)
    assert final_metrics({"loss": 0.3, "val_loss": None, "best_val_loss": math.inf}) == {"hparams/loss": 0.3}


# --- sweep summary --------------------------------------------------------------------------------------------------
def _job(sweep, num, overrides, summary=None, error=None, metric=None):
    folder = sweep / f"{num}_{','.join(overrides)}"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    record = RunRecord(folder, overrides, job_num=num)
    record.start()
    if summary is not None:
        record.completed(summary, metric, "val/loss")
    elif error is not None:
        record.failed(SdloraError(error), user_error=True)
    return folder


@pytest.fixture
def sweep(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    root = tmp_path / "sweep"
    common = "model=tiny"
    a = _job(root, 0, [common, "network.rank=4"], {"steps": 4, "loss": 0.5, "val_loss": 0.41, "best_val_loss": 0.40,
             "files": [str(root / "0_x" / "last.safetensors")]}, metric=0.41)  # fmt: skip
    best = {"path": str(root / "1_x" / "last-best.safetensors"), "step": 3, "metric": "val/loss", "value": 0.33}
    _job(root, 1, [common, "network.rank=8"], {"steps": 4, "loss": 0.45, "val_loss": 0.35, "best_val_loss": 0.33,
         "files": [], "best": best}, metric=0.35)  # fmt: skip
    _job(root, 2, [common, "network.rank=0"], error="the configuration has 1 problem(s):\n  - network.rank must be ≥ 1")
    running = _job(root, 3, [common, "network.rank=32"])  # killed: events only
    writer = SummaryWriter(str(running / "tensorboard"))
    for step, value in enumerate([0.9, 0.8, 0.7]):
        writer.add_scalar("loss/average", value, step)
    writer.add_scalar("val/loss", 0.6, 2)
    writer.close()
    (root / "optimization_results.yaml").write_text("name: optuna\nbest_params:\n  network.rank: 8\nbest_value: 0.35\n")
    assert a.is_dir()
    return root


def test_summary_rows_best_and_failures(sweep):
    summary = sweep_summary.summarize(sweep)
    rows = summary.rows
    assert [r.job for r in rows] == [0, 1, 2, 3]
    assert [r.status for r in rows] == ["completed", "completed", "failed", "running"]
    assert [r.shown_overrides for r in rows] == [["network.rank=4"], ["network.rank=8"], ["network.rank=0"],
                                                  ["network.rank=32"]]  # fmt: skip
    assert summary.best is rows[1] and summary.metric_name == "best val/loss"
    assert (rows[3].steps, rows[3].train_loss, rows[3].best_val_loss) == (3, pytest.approx(0.7), pytest.approx(0.6))
    assert "network.rank must be ≥ 1" in rows[2].error

    markdown = sweep_summary.to_markdown(summary)
    assert "| **1** ★ | network.rank=8 | completed | 0.45 | 0.35 | 0.33 | 4 |" in markdown
    assert "failed: the configuration has 1 problem(s): network.rank must be ≥ 1" in markdown
    # the best LoRA (save.best_by) is named: its file name in the table, its path in the CSV and the run record
    assert rows[1].best_lora.endswith("last-best.safetensors") and rows[0].best_lora is None
    assert read_record(rows[1].folder)["best"]["step"] == 3
    assert "| last-best.safetensors |" in markdown and rows[1].best_lora in sweep_summary.to_csv(summary)
    assert "4 job(s), 1 failed." in markdown and "Optuna's best: network.rank=8 (value 0.35)" in markdown
    table = list(csv.DictReader(io.StringIO(sweep_summary.to_csv(summary))))
    assert [r["best"] for r in table] == ["", "yes", "", ""]
    assert table[0]["overrides"] == "model=tiny network.rank=4" and table[0]["lora"].endswith("last.safetensors")


def test_summary_cli_writes_csv_markdown_and_plot(sweep, capsys):
    assert sweep_summary.main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "Best (best val/loss 0.33): job 1 — network.rank=8" in out
    for name in ("summary.csv", "summary.md", "sweep.png"):
        assert (sweep / name).is_file(), name
    with Image.open(sweep / "sweep.png") as image:
        assert image.format == "PNG" and image.width >= 600


def test_summary_of_a_folder_without_jobs_is_a_user_error(tmp_path, capsys):
    assert sweep_summary.main([str(tmp_path)]) == 1
    assert "holds no job folders" in capsys.readouterr().err

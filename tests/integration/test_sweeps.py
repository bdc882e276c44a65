"""Hydra sweeps through ``python train.py -m`` on the tiny model (CPU, offline): a grid with a failing job, an Optuna
search on val/loss with SQLite storage, and the sweep summary on it."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sdlora.network.io import load_lora
from sdlora.sweep.record import read_record
from tests.helpers.processes import run_python


def sweep_setup(tmp_path: Path, train_dir: Path) -> list[str]:
    """The fixed options of a sweep in an experiment file of an extra config folder (so that job folders are named
    by the swept overrides alone), as a user would keep them."""
    extra = tmp_path / "conf_extra" / "experiment"
    extra.mkdir(parents=True)
    (extra / "sweep_test.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /model: tiny\n"
        f"data:\n  train_dir: {train_dir}\n  caption_extension: .txt\n  resolution: '64'\n  batch_size: 2\n"
        "trainer:\n  max_steps: 3\n  accelerator: cpu\n  enable_progress_bar: false\n  log_every_n_steps: 1\n"
    )
    return [f"hydra.searchpath=[file://{tmp_path / 'conf_extra'}]", "experiment=sweep_test"]


def run_train(*args: str) -> subprocess.CompletedProcess:
    return run_python(["train.py", *args])


def test_grid_sweep_one_lora_per_job_and_a_failed_job_reported(example_data, tmp_path):
    sweep = tmp_path / "grid"
    result = run_train("-m", *sweep_setup(tmp_path, example_data), f"hydra.sweep.dir={sweep}", "network.rank=4,8,0")
    output = result.stdout + result.stderr
    # Hydra runs every job, then reports the failed one as a message (no traceback) and exits with 1
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    assert "network.rank must be ≥ 1, got 0" in result.stderr
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_network.rank=4", "1_network.rank=8", "2_network.rank=0"]
    for rank, job in ((4, jobs[0]), (8, jobs[1])):
        tensors, meta = load_lora(sweep / job / "last.safetensors")
        assert meta["ss_network_dim"] == str(rank)
        assert all(v.shape[0] == rank for k, v in tensors.items() if k.endswith("lora_down.weight"))
        assert (sweep / job / ".hydra" / "config.yaml").is_file()
        record = read_record(sweep / job)
        assert record["status"] == "completed" and record["steps"] == 3 and math.isfinite(record["metric"])
        assert record["metric_name"] == "loss/average"
    failed = read_record(sweep / jobs[2])
    assert failed["status"] == "failed" and failed["user_error"] and "network.rank must be ≥ 1" in failed["error"]
    assert not list((sweep / jobs[2]).glob("*.safetensors"))


def test_optuna_sweep_minimises_val_loss_and_the_summary_reads_it(example_data, tmp_path):
    import optuna

    sweep = tmp_path / "optuna"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = run_train(
        "-m", *sweep_setup(tmp_path, example_data), "hparams_search=optuna", f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=test",
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.name == "optuna" and math.isfinite(results.best_value)
    assert set(results.best_params) == {"optimizer.lr", "network.rank", "network.alpha_ratio", "loss.min_snr_gamma",
                                        "loss.noise_offset"}  # fmt: skip
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 3
    metrics = []
    for job in jobs:
        record = read_record(job)
        assert record["status"] == "completed" and record["metric_name"] == "val/loss"
        metrics.append(record["metric"])
        plan = OmegaConf.load(job / "data_plan.json")
        assert (plan.validation.images, plan.num_images) == (2, 10)  # validation.split=0.2 of the 12 images
        params = dict(o.split("=", 1) for o in record["overrides"])
        _, meta = load_lora(job / "last.safetensors")
        rank, ratio = int(params["network.rank"]), float(params["network.alpha_ratio"])
        assert float(meta["ss_network_alpha"]) == rank * ratio and meta["ss_network_dim"] == str(rank)
    assert results.best_value == min(metrics)
    study = optuna.load_study(study_name="test", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3

    summary = run_python(["scripts/summarize_sweep.py", str(sweep)], timeout=300)
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert f"Best (best val/loss {results.best_value:.5g})" in summary.stdout
    assert summary.stdout.count("| completed |") == 3
    for name in ("summary.csv", "summary.md", "sweep.png"):
        assert (sweep / name).is_file()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(jobs[0] / "tensorboard"))
    accumulator.Reload()
    assert "hparams/val_loss" in accumulator.Tags()["scalars"]
    assert accumulator.PluginTagToContent("hparams")  # the HParams tab's session data


@pytest.mark.xdist_group("processes")
def test_parallel_local_sweep_gives_each_worker_its_own_gpu(example_data, tmp_path):
    """hydra/launcher=joblib with SDLORA_JOB_GPUS: jobs run in worker processes, each worker on one GPU of the list
    (on this CPU-only machine CUDA_VISIBLE_DEVICES is set but unused: trainer.accelerator=cpu)."""

    sweep = tmp_path / "joblib"
    args = ["-m", *sweep_setup(tmp_path, example_data), "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={sweep}", "network.rank=4,8", "trainer.max_steps=2"]  # fmt: skip
    result = run_python(["train.py", *args], env={"SDLORA_JOB_GPUS": "7,9"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    records = [read_record(job) for job in sorted(sweep.glob("[0-9]*_*"))]
    assert [r["status"] for r in records] == ["completed", "completed"]
    gpu_of_worker = {}
    for record in records:
        assert record["cuda_visible_devices"] in ("7", "9")
        assert gpu_of_worker.setdefault(record["pid"], record["cuda_visible_devices"]) == record["cuda_visible_devices"]
    assert len(set(gpu_of_worker.values())) == len(gpu_of_worker)  # distinct workers, distinct GPUs
    assert (sweep / ".gpu_claims").is_dir()


def test_submitit_runs_sweep_jobs_as_the_slurm_launcher_does(example_data, tmp_path):
    """hydra/launcher=submitit_local: the submitit machinery of hydra/launcher=slurm (pickled job, own process,
    results handed back) without a SLURM cluster."""
    sweep = tmp_path / "submitit"
    result = run_train(
        "-m", *sweep_setup(tmp_path, example_data), "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}",
        "network.rank=4", "trainer.max_steps=2",
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (job,) = sweep.glob("[0-9]*_*")
    record = read_record(job)
    assert job.name == "0_network.rank=4,trainer.max_steps=2"
    assert record["status"] == "completed" and record["steps"] == 2
    assert (job / "last.safetensors").is_file() and (sweep / ".submitit").is_dir()

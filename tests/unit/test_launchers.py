"""Launcher configs and the GPU claims of parallel local sweeps, without running a sweep."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from sdlora.errors import SdloraError
from sdlora.sweep import gpus
from tests.helpers.config import CONF_DIR


def compose_with_hydra(*overrides: str):
    from hydra import compose, initialize_config_dir

    import sdlora.config  # noqa: F401

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_the_slurm_example_composes_onto_the_submitit_launcher():
    cfg = compose_with_hydra(
        "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.tasks_per_node=4", "trainer=ddp", "trainer.devices=4",
    )  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 4, 4)
    assert launcher.timeout_min == 240 and launcher.nodes == 1 and list(launcher.setup) == []
    assert OmegaConf.select(cfg, "hydra.launcher.submitit_folder", throw_on_resolution_failure=False) is not None
    # the plugin's schema types the file: a misspelt key fails at composition
    with pytest.raises(Exception, match="gpu_per_node"):
        compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.gpu_per_node=4")


def test_slurm_jobs_get_sdlora_s_preemption_signal(tmp_path):
    """The sbatch script asks SLURM for SIGUSR1 before the time limit (trainer.preemption_signal's default), not
    submitit's USR2: sdlora saves a state and requeues the job itself."""
    from submitit.slurm.slurm import _make_sbatch_string

    from sdlora.signals import signal_number

    launcher = compose_with_hydra("hydra/launcher=slurm").hydra.launcher
    extra = OmegaConf.to_container(launcher.additional_parameters)
    script = _make_sbatch_string(command="python -c pass", folder=tmp_path, additional_parameters=extra)
    assert "#SBATCH --signal=USR1@120" in script
    assert signal_number(compose_with_hydra("hydra/launcher=slurm").trainer.preemption_signal) == signal.SIGUSR1


def test_joblib_launcher_composes():
    cfg = compose_with_hydra("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert cfg.hydra.launcher.n_jobs == 2 and "Joblib" in cfg.hydra.launcher._target_


def test_gpu_pool_parsing():
    assert gpus.gpu_pool("0, 1,3") == ["0", "1", "3"]
    for bad in ("", " , ", "0,0"):
        with pytest.raises(SdloraError, match="SDLORA_JOB_GPUS"):
            gpus.gpu_pool(bad)


CLAIM = """
import sys, time
from pathlib import Path
from sdlora.sweep.gpus import claim_gpu
print(claim_gpu(["0", "1"], Path(sys.argv[1]), poll_s=0.05), flush=True)
print(claim_gpu(["0", "1"], Path(sys.argv[1])), flush=True)  # a worker keeps its GPU
sys.stdin.readline()  # hold the claim until told to exit
"""


def start_worker(claims_dir) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(claims_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def test_each_worker_process_claims_its_own_gpu_and_keeps_it(tmp_path):
    """Two worker processes get distinct GPUs; a third waits until one of them exits and then takes its GPU."""
    workers = [start_worker(tmp_path) for _ in range(2)]
    try:
        claimed = [[w.stdout.readline().strip(), w.stdout.readline().strip()] for w in workers]
        assert sorted(c[0] for c in claimed) == ["0", "1"] and all(c[0] == c[1] for c in claimed)
        third = start_worker(tmp_path)
        workers.append(third)
        workers[0].communicate("\n", timeout=60)  # the first worker exits: its claim goes with it
        assert third.stdout.readline().strip() == claimed[0][0]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.communicate("\n", timeout=60)

"""Scale-out pieces without starting processes: the distributed bucket sampler, the global-batch randomness every rank
draws, the world size planned from the config, the rank announced by launchers, and caches that only rank 0 writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from sdlora.config.schema import LossConfig, TrainerConfig
from sdlora.data.build import build_training_data
from sdlora.data.latent_cache import cache_latents
from sdlora.data.posterior import sample_posterior
from sdlora.data.sampler import BucketBatchSampler, rank_share
from sdlora.diffusion.objective import DiffusionObjective
from sdlora.distributed.share import BatchShare
from sdlora.distributed.world import (
    device_count,
    env_global_rank,
    planned_world_size,
    processes_started_outside,
    strategy_problems,
)
from sdlora.errors import SdloraError
from tests.helpers.config import data_config

BUCKETS = [list(range(0, 7)), list(range(7, 10)), list(range(10, 22))]  # 7, 3 and 12 entries
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS")


@pytest.fixture
def clean_env(monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- sampler ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "world"), [(4, 2), (3, 2), (1, 2), (5, 3), (6, 3), (7, 4)])
def test_rank_shares_cover_a_global_batch_with_equal_sizes(n, world):
    batch = list(range(100, 100 + n))
    shares = [rank_share(batch, world, r) for r in range(world)]
    per_rank = -(-n // world)
    assert all(len(s) == per_rank for s in shares)
    joined = [e for s in shares for e in s]
    assert joined[:n] == batch  # distinct entries first, in order
    assert joined[n:] == batch[: per_rank * world - n]  # padding repeats the batch's own first entries


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_distributed_sampler_splits_the_batches_of_one_process_with_the_global_batch(batch_size):
    world = 2
    single = BucketBatchSampler(BUCKETS, batch_size * world, seed=3)
    ranks = [BucketBatchSampler(BUCKETS, batch_size, seed=3, num_replicas=world) for _ in range(world)]
    for rank, sampler in enumerate(ranks):
        sampler.set_rank(rank, world)
    for epoch in (0, 1):
        for sampler in (single, *ranks):
            sampler.set_epoch(epoch)
        expected = single.batches(epoch)
        per_rank = [list(s) for s in ranks]
        assert len(ranks[0]) == len(single) == len(expected)  # same number of steps on every rank
        assert all(len(p) == len(expected) for p in per_rank)
        for step, global_batch in enumerate(expected):
            parts = [[e for e, ep in p[step]] for p in per_rank]
            assert all(ep == epoch for p in per_rank for _, ep in p[step])
            assert parts == [rank_share(global_batch, world, r) for r in range(world)]
            buckets = {next(i for i, b in enumerate(BUCKETS) if e in b) for part in parts for e in part}
            assert len(buckets) == 1, "all ranks train on one bucket at a time"
            if len(global_batch) == batch_size * world:
                assert set(parts[0]).isdisjoint(parts[1])


def test_sampler_length_counts_global_batches_and_rank_is_checked():
    sampler = BucketBatchSampler(BUCKETS, 2, seed=0, num_replicas=2)
    assert len(sampler) == 2 + 1 + 3  # ⌈7/4⌉ + ⌈3/4⌉ + ⌈12/4⌉
    with pytest.raises(ValueError, match="made for 2 process"):
        sampler.set_rank(0, 4)
    with pytest.raises(ValueError, match="rank 2"):
        sampler.set_rank(2, 2)


def test_plan_steps_per_epoch_reflect_the_world_size(tmp_path):
    folder = tmp_path / "data" / "5_thing"
    folder.mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(folder / f"{i}.png")
    cfg = data_config(train_dir=str(tmp_path / "data"), batch_size=2, caption_extension=".caption")
    one = build_training_data(cfg, (64, 64), 0, 1, -1, 1)
    four = build_training_data(cfg, (64, 64), 0, 1, -1, 1, world_size=4)
    assert one.plan.length.steps_per_epoch == 15  # 30 samples / batch 2
    assert four.plan.length.steps_per_epoch == 4  # 30 samples / global batch 8, the last one short
    plan = four.plan.to_json()
    assert (plan["world_size"], plan["global_batch_size"], plan["steps_per_epoch"]) == (4, 8, 4)
    assert "batch size 2 × 4 processes = global batch 8" in four.plan.format()


# --- global-batch randomness ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        LossConfig(),
        LossConfig(noise_offset=0.1, adaptive_noise_scale=0.05, noise_offset_random_strength=True),
        LossConfig(multires_noise_iterations=3, ip_noise_gamma=0.1, ip_noise_gamma_random_strength=True),
    ],
    ids=["plain", "offset", "multires_ip"],
)
def test_every_rank_draws_its_rows_of_the_global_batch_noise(settings):
    objective = DiffusionObjective("epsilon", settings)
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))  # the global batch
    whole = objective.noise(latents, generator=torch.Generator().manual_seed(7))
    for rank in range(2):
        share = BatchShare(rank, 2)
        part = share.noise(objective, latents[rank * 2 : rank * 2 + 2], torch.Generator().manual_seed(7))
        rows = slice(rank * 2, rank * 2 + 2)
        assert torch.equal(part.timesteps, whole.timesteps[rows])
        torch.testing.assert_close(part.noisy, whole.noisy[rows], rtol=0, atol=1e-6)
        torch.testing.assert_close(part.target, whole.target[rows], rtol=0, atol=1e-6)


def test_one_process_share_is_the_plain_draw():
    objective = DiffusionObjective("epsilon")
    latents = torch.randn(3, 4, 8, 8)
    plain = objective.noise(latents, generator=torch.Generator().manual_seed(2))
    shared = BatchShare().noise(objective, latents, torch.Generator().manual_seed(2))
    assert torch.equal(plain.noisy, shared.noisy) and torch.equal(plain.timesteps, shared.timesteps)


def test_posterior_sample_of_a_share_is_a_slice_of_the_global_sample():
    mean, std = torch.randn(4, 4, 8, 8), torch.rand(4, 4, 8, 8)
    whole = sample_posterior(mean, std, torch.Generator().manual_seed(5))
    part = sample_posterior(mean[2:], std[2:], torch.Generator().manual_seed(5), BatchShare(1, 2))
    torch.testing.assert_close(part, whole[2:], rtol=0, atol=1e-6)


# --- world size, ranks, strategies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("devices", "count"), [(1, 1), (4, 4), ("2", 2), ("0,1,3", 3), ("1,", 1), ([0, 2], 2), ("auto", 1), (-1, 1)]
)
def test_device_count(devices, count):
    assert device_count(devices, "cpu") == count


@pytest.mark.parametrize("devices", [0, "two", -3])
def test_bad_device_counts_are_user_errors(devices):
    with pytest.raises(SdloraError, match="trainer.devices"):
        device_count(devices, "cpu")


def test_planned_world_size_multiplies_nodes():
    trainer = OmegaConf.merge(OmegaConf.structured(TrainerConfig), {"devices": 2, "num_nodes": 3, "accelerator": "cpu"})
    assert planned_world_size(trainer) == 6


def test_rank_from_launcher_environment(clean_env):
    assert env_global_rank(2) == 0 and not processes_started_outside()
    clean_env.setenv("LOCAL_RANK", "1")
    clean_env.setenv("NODE_RANK", "1")
    assert env_global_rank(2) == 3 and processes_started_outside()  # Lightning's child process on node 1
    clean_env.setenv("RANK", "5")
    assert env_global_rank(2) == 5  # torchrun
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        clean_env.delenv(name)
    clean_env.setenv("SLURM_PROCID", "2")
    clean_env.setenv("SLURM_NTASKS", "1")
    assert env_global_rank(1) == 0  # one task: SLURM does not manage the processes
    clean_env.setenv("SLURM_NTASKS", "4")
    assert env_global_rank(1) == 2 and processes_started_outside()


@pytest.mark.parametrize("strategy", ["fsdp_cpu_offload", "ddp_spawn", "deepspeed_stage_3", "ddp_fork"])
def test_unsupported_strategies_are_named(strategy):
    trainer = OmegaConf.merge(OmegaConf.structured(TrainerConfig), {"strategy": strategy})
    (problem,) = strategy_problems(trainer)
    assert f"trainer.strategy={strategy} is not supported" in problem and "trainer=ddp" in problem


@pytest.mark.parametrize("strategy", ["auto", "ddp", "ddp_find_unused_parameters_true", "fsdp"])
def test_supported_strategies(strategy):
    assert strategy_problems(OmegaConf.merge(OmegaConf.structured(TrainerConfig), {"strategy": strategy})) == []


# --- caches -----------------------------------------------------------------------------------------------------------


def test_ranks_other_than_zero_read_cache_files_but_never_write(tmp_path):
    from sdlora.models.tiny import TinySD15Family

    components = TinySD15Family().load()
    folder = tmp_path / "data" / "1_thing"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = data_config(train_dir=str(tmp_path / "data"), caption_extension=".caption")
    cache = tmp_path / "cache"

    def run(write: bool):
        data = build_training_data(cfg, (64, 64), 0, 1, -1, 1)
        report = cache_latents(data.dataset, components.vae, mode="disk", folder=cache, write=write)
        return data.dataset, report

    dataset, report = run(write=False)  # a rank ≠ 0 that finds no files: computes into memory
    assert report.computed == 3 and not cache.exists() and len(dataset.latents.memory) == 3
    _, report = run(write=True)  # rank 0
    assert report.computed == 3 and len(list(cache.glob("*.safetensors"))) == 3
    before = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    dataset, report = run(write=False)  # a rank ≠ 0 after rank 0: reads the files
    assert (report.reused, report.computed) == (3, 0) and not dataset.latents.memory
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == before

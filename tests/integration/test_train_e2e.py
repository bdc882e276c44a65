"""End-to-end training on tiny models (CPU, offline): the LoRA file, its metadata, TensorBoard scalars, the data plan,
reproducibility, and the main options of the foundation (precision, accumulation, checkpointing, long prompts)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.config import compose_config, tiny_overrides
from tests.helpers.processes import run_python


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def scalars(run_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list(run_dir.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file in {run_dir}"
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    return {tag: [e.value for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def run(tmp_path: Path, train_dir: Path, *extra: str, model: str = "tiny", name: str = "run") -> tuple[dict, Path]:
    run_dir = tmp_path / name
    summary = train(compose_config(*tiny_overrides(train_dir, *extra, model=model)), run_dir)
    return summary, run_dir


def test_tiny_training_writes_lora_events_and_plan(example_data, tmp_path):
    before = tree(example_data)
    summary, run_dir = run(tmp_path, example_data, "save.output_name=mylora", "scheduler=cosine")
    lora = run_dir / "mylora.safetensors"
    assert summary["files"] == [str(lora)] and lora.is_file()
    assert summary["steps"] == 4 and math.isfinite(summary["loss"])
    assert tree(example_data) == before, "training must never write into the dataset folder"
    assert not list(run_dir.glob(".*.tmp-*")), "no temporary file may remain"

    tensors, meta = load_lora(lora)
    assert any(k.startswith("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.") for k in tensors)
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj.") for k in tensors)
    assert all(v.dtype == torch.float32 for v in tensors.values())
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("8", "1.0")
    assert (meta["ss_base_model_version"], meta["ss_v2"]) == ("sd_v1", "False")
    assert meta["ss_steps"] == "4" and meta["ss_output_name"] == "mylora"
    assert meta["ss_num_train_images"] == "120"  # 12 images × 10 repeats
    assert json.loads(meta["ss_dataset_dirs"]) == {"10_shapes": {"n_repeats": 10, "img_count": 12}}
    assert json.loads(meta["ss_tag_frequency"])["10_shapes"]["shapes"] == 12
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.prediction_type"] == "epsilon" and meta["modelspec.resolution"] == "64x64"
    assert meta["modelspec.title"] == "mylora" and meta["modelspec.implementation"] == "diffusers"
    assert len(meta["sshs_model_hash"]) == 64 and len(meta["sshs_legacy_hash"]) == 8

    logged = scalars(run_dir)
    for tag in ("loss/current", "loss/average", "lr/unet", "lr/textencoder"):
        assert len(logged[tag]) == 4, tag
        assert all(math.isfinite(v) for v in logged[tag])
    assert logged["lr/unet"][0] == pytest.approx(1e-4) and logged["lr/unet"][-1] < 1e-4  # cosine decays

    plan = json.loads((run_dir / "data_plan.json").read_text())
    assert plan["total_steps"] == 4 and plan["num_images"] == 12 and plan["num_reg_images"] == 0
    assert plan["buckets"][0]["resolution"] == [64, 64] and plan["buckets"][0]["count_with_repeats"] == 120
    assert all(Path(img["path"]).is_absolute() and img["repeats"] == 10 for img in plan["buckets"][0]["images"])
    assert plan["memory"]["training_peak_gb"] > 0  # the memory estimate, made before training


def test_tiny_sdxl_training(small_dataset, tmp_path):
    summary, run_dir = run(tmp_path, small_dataset, model="tiny_sdxl")
    tensors, meta = load_lora(run_dir / "last.safetensors")
    assert any(k.startswith("lora_unet_input_blocks_") for k in tensors)
    assert any(k.startswith("lora_te1_text_model_") for k in tensors)
    assert any(k.startswith("lora_te2_text_model_") for k in tensors)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert math.isfinite(summary["loss"])


def test_same_seed_gives_the_same_lora(small_dataset, tmp_path):
    first, _ = run(tmp_path, small_dataset, name="a")
    second, _ = run(tmp_path, small_dataset, name="b")
    other, _ = run(tmp_path, small_dataset, "seed=7", name="c")
    a, b, c = (load_lora(s["files"][0])[0] for s in (first, second, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if "lora_up" in k)


@pytest.mark.parametrize(
    "extra",
    [
        ["precision=bf16_mixed"],
        ["model.gradient_checkpointing=true"],
        ["model.max_token_length=150", "model.clip_skip=2"],
        ["trainer.accumulate_grad_batches=2", "network.train_text_encoder=false", "optimizer=adamw8bit"],
        ["network.train_unet=false", "network.unet_lr=0.001"],
        ["save.precision=fp16", "save.format=ckpt", "loss.min_timestep=100", "loss.max_timestep=101"],
    ],
    ids=["bf16_mixed", "grad_ckpt", "long_prompts_clip_skip", "accum_unet_only_8bit", "te_only", "fp16_ckpt"],
)
def test_options_train_and_update_the_lora(extra, small_dataset, tmp_path):
    summary, _ = run(tmp_path, small_dataset, "optimizer.lr=1e-2", *extra)
    assert math.isfinite(summary["loss"])
    path = Path(summary["files"][0])
    tensors, meta = load_lora(path)
    ups = [v for k, v in tensors.items() if k.endswith("lora_up.weight")]
    assert ups and any(v.abs().sum() > 0 for v in ups), "training must move the LoRA away from zero"
    if "save.format=ckpt" in extra:
        assert path.suffix == ".ckpt" and meta == {}
        assert all(v.dtype == torch.float16 for v in tensors.values())
    if "network.train_text_encoder=false" in extra:
        assert not any(k.startswith("lora_te") for k in tensors)
        assert summary["steps"] == 4  # optimizer steps: 8 batches with accumulation 2
    if "network.train_unet=false" in extra:
        assert not any(k.startswith("lora_unet") for k in tensors)


def test_dry_run_prints_the_plan_and_loads_nothing(example_data, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="sdlora")
    cfg = compose_config(*tiny_overrides(example_data, "dry_run=true", "trainer.max_steps=-1", "trainer.max_epochs=3"))
    summary = train(cfg, tmp_path / "dry")
    assert summary["total_steps"] == 180  # 120 entries / batch 2 = 60 steps per epoch × 3 epochs
    assert (tmp_path / "dry" / "data_plan.json").is_file()
    assert not list((tmp_path / "dry").glob("*.safetensors"))
    assert "Data plan" in caplog.text and "10_shapes" in caplog.text and "180 steps over 3 epoch" in caplog.text


def test_demo_command_runs_through_hydra(example_data, tmp_path):
    """``python train.py experiment=demo`` (shortened): Hydra run folder with the LoRA, events and composed config."""
    run_dir = tmp_path / "demo_run"
    result = run_python(["train.py", "experiment=demo", "trainer.max_steps=4", f"data.train_dir={example_data}",
                         f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"], timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (run_dir / "demo.safetensors").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert "Data plan" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr

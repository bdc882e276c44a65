"""Sample images during training on the tiny models: the files kohya's options ask for, TensorBoard images, and a
training run that is the same with or without sampling (every RNG stream is restored)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from sdlora.errors import SdloraError
from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.config import compose_config, tiny_overrides


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text(
        "# two prompts\ntok, red square --n blurry --w 64 --h 72 --s 2 --l 5.5 --d 123\n"
        "tok, green square --s 3 --ss euler_a\n",
        encoding="utf-8",
    )
    return path


def run(data: Path, run_dir: Path, *extra: str, model: str = "tiny") -> dict:
    return train(compose_config(*tiny_overrides(data, "network.dropout=0.2", *extra, model=model)), run_dir)


def test_samples_files_tensorboard_and_unchanged_training(small_dataset, prompts, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sampled = tmp_path / "sampled"
    run(small_dataset, sampled, f"sample.prompts={prompts}", "sample.every_n_steps=2", "sample.at_start=true",
        "sample.every_n_epochs=1", "sample.sampler=dpmsolver++")  # fmt: skip
    # at start (step 0), steps 2 and 4; the epoch trigger fires at step 4 too, which is sampled once
    expected = [f"last_{step:06d}_{i:02d}_{seed}.png" for step in (0, 2, 4) for i, seed in ((0, 123), (1, 43))]
    assert sorted(p.name for p in (sampled / "sample").iterdir()) == sorted(expected)
    with Image.open(sampled / "sample" / "last_000002_00_123.png") as image:
        assert image.size == (64, 72) and image.mode == "RGB"  # --w 64 --h 72
    with Image.open(sampled / "sample" / "last_000002_01_43.png") as image:
        assert image.size == (64, 64)  # the family's resolution (seed = run seed 42 + prompt index 1)

    events = next(sampled.rglob("events.out.tfevents.*")).parent
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    assert {"sample/00", "sample/01"} <= set(accumulator.Tags()["images"])
    assert [e.step for e in accumulator.Images("sample/00")] == [0, 2, 4]
    assert accumulator.Images("sample/00")[0].height == 72

    plain = tmp_path / "plain"
    run(small_dataset, plain)
    a, _ = load_lora(sampled / "last.safetensors")
    b, _ = load_lora(plain / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "sampling must not change training"


def test_same_seed_same_image(small_dataset, prompts, tmp_path):
    for name in ("one", "two"):
        run(small_dataset, tmp_path / name, f"sample.prompts={prompts}", "sample.at_start=true",
            "trainer.max_steps=1")  # fmt: skip
    one, two = (tmp_path / name / "sample" / "last_000000_00_123.png" for name in ("one", "two"))
    assert one.read_bytes() == two.read_bytes()


def test_sdxl_samples_at_the_family_resolution(small_dataset, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[prompt]\nsample_steps = 2\n[[prompt.subset]]\nprompt = "tok"\nseed = 5\n', encoding="utf-8")
    out = tmp_path / "xl"
    run(small_dataset, out, f"sample.prompts={path}", "sample.every_n_steps=1", "trainer.max_steps=1",
        model="tiny_sdxl")  # fmt: skip
    with Image.open(out / "sample" / "last_000001_00_5.png") as image:
        assert image.size == (64, 64)


def test_sample_options_are_checked(small_dataset, prompts, tmp_path):
    from sdlora.config.checks import check_config

    for extra, text in [
        (("sample.every_n_steps=2",), "need sample.prompts"),
        ((f"sample.prompts={prompts}",), "no sample image would be made"),
        ((f"sample.prompts={prompts}", "sample.at_start=true", "sample.sampler=magic"), "is not a sampler"),
        ((f"sample.prompts={tmp_path / 'nope.txt'}", "sample.at_start=true"), "does not exist"),
    ]:
        with pytest.raises(SdloraError, match=text):
            check_config(compose_config(*tiny_overrides(small_dataset, *extra)))

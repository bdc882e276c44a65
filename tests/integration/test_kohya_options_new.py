"""The kohya_ss v21.8.8 options added last: the experiment recipes (each composed and run two steps on the tiny
models), the training comment and model card, logger=wandb (offline), plain attention, persistent DataLoader workers,
the block lr presets as config values, and ``--version``."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.cli import run_train_py
from tests.helpers.config import CONF_DIR, EXAMPLE_DATA, ROOT, compose_config, resolved, tiny_overrides
from tests.helpers.processes import run_python

RECIPES = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if p.stem != "demo")


def test_the_recipes_are_there():
    assert {"sd15_character", "sdxl_character_prodigy", "sdxl_style_cached_te", "sdxl_low_vram"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_two_steps_on_the_tiny_model(recipe, small_dataset, tmp_path):
    model = "tiny" if recipe.startswith("sd15") else "tiny_sdxl"
    overrides = [f"experiment={recipe}", *tiny_overrides(small_dataset, model=model), "trainer.max_steps=2",
                 "trainer.max_epochs=null", "data.batch_size=1"]  # fmt: skip
    summary = train(compose_config(*overrides), tmp_path / "run")
    assert summary["steps"] == 2
    name = resolved(*overrides).save.output_name
    assert (tmp_path / "run" / f"{name}.safetensors").is_file()


def test_training_comment_and_model_card(small_dataset, tmp_path):
    overrides = tiny_overrides(small_dataset, "trainer.max_steps=1", "save.training_comment=trigger: sks",
                               "save.metadata.title=My LoRA", "save.metadata.author=me", "save.metadata.license=MIT",
                               "save.metadata.description=a test", "save.metadata.tags='a,b'")  # fmt: skip
    train(compose_config(*overrides), tmp_path / "run")
    _, metadata = load_lora(tmp_path / "run" / "last.safetensors")
    assert metadata["ss_training_comment"] == "trigger: sks"
    expected = {"title": "My LoRA", "author": "me", "license": "MIT", "description": "a test", "tags": "a,b"}
    assert {k: metadata[f"modelspec.{k}"] for k in expected} == expected


class Seen(Callback):
    def on_train_start(self, trainer, pl_module):
        self.processors = {type(p).__name__ for p in pl_module.unet.attn_processors.values()}
        self.persistent = trainer.train_dataloader.persistent_workers


def test_plain_attention_and_persistent_workers(small_dataset, tmp_path):
    seen = Seen()
    overrides = tiny_overrides(small_dataset, "trainer.max_steps=1", "model.attention=none", "data.num_workers=1",
                               "data.persistent_workers=false")  # fmt: skip
    train(compose_config(*overrides), tmp_path / "run", callbacks=[seen])
    assert seen.processors == {"AttnProcessor"} and seen.persistent is False


@pytest.mark.parametrize("model", ["tiny", "tiny_sdxl"])
def test_weighted_captions_train_and_sample(model, small_dataset, tmp_path):
    """Emphasis in captions and sample prompts: "(red:1.0)" is "red" (the syntax is read, not tokenised), while
    "(red:1.9)" changes the image of the same seed."""
    from PIL import Image

    for caption in (small_dataset / "2_tok").glob("*.txt"):
        caption.write_text("tok, (red:1.3), [square], (big, round:0.8)", encoding="utf-8")
    prompts = tmp_path / "prompts.txt"
    lines = ("tok, red square", "tok, (red:1.0) square", "tok, (red:1.9) square")
    prompts.write_text("".join(f"{line} --w 64 --h 64 --s 2 --d 7\n" for line in lines), encoding="utf-8")
    overrides = tiny_overrides(small_dataset, "trainer.max_steps=2", "data.weighted_captions=true",
                               "data.shuffle_caption=true", f"sample.prompts={prompts}", "sample.at_start=true",
                               model=model)  # fmt: skip
    summary = train(compose_config(*overrides), tmp_path / "run")
    assert summary["steps"] == 2 and (tmp_path / "run" / "last.safetensors").is_file()
    images = []
    for i in range(3):
        with Image.open(tmp_path / "run" / "sample" / f"last_000000_{i:02d}_7.png") as image:
            images.append(image.tobytes())
    assert images[0] == images[1] and images[0] != images[2]


def test_block_lr_presets_are_config_values():
    base = ["model=tiny", f"data.train_dir={EXAMPLE_DATA}"]
    weights = resolved(
        *base,
        "network.down_lr_weight=linear+0.5",
        "network.mid_lr_weight=2",
        "network.up_lr_weight=zeros",
        "network.block_lr_zero_threshold=0.6",
    ).network.block_lr_weight
    assert len(weights) == 25 and weights[0] == 0.0 and weights[11] == pytest.approx(1.5)  # 0.5 ≤ 0.6 → 0
    assert weights[12] == 2.0 and weights[13:] == (0.0,) * 12
    sdxl = resolved("model=tiny_sdxl", f"data.train_dir={EXAMPLE_DATA}", "network.up_lr_weight=sine").network
    assert len(sdxl.block_lr_weight) == 23 and sdxl.block_lr_weight[-1] == 1.0
    from sdlora.config.checks import check_config
    from sdlora.errors import SdloraError

    with pytest.raises(SdloraError, match="down_lr_weight"):
        check_config(compose_config(*base, "network.down_lr_weight=wavy"))


def test_wandb_logger_offline(small_dataset, tmp_path):
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    run_train_py([*tiny_overrides(small_dataset, "trainer.max_steps=2", "logger=wandb", "logger.offline=true",
                                  "sample.prompts=examples/prompts.txt", "sample.every_n_steps=2")], run_dir,
                 env={"WANDB_SILENT": "true"})  # fmt: skip
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert list(runs[0].glob("files/media/images/sample/*.png"))  # sample images reach W&B
    assert (run_dir / "last.safetensors").is_file()


def test_version_on_the_command_line():
    from sdlora import __version__

    result = run_python(["train.py", "--version"], timeout=120)
    assert result.returncode == 0 and result.stdout.startswith(f"sdlora {__version__} (torch ")
    assert not Path(ROOT / "outputs").joinpath("--version").exists()


def test_version_of_every_tool(capsys):
    import importlib

    import tomllib

    from sdlora import __version__

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    for name, target in scripts.items():
        module, function = target.split(":")
        with pytest.raises(SystemExit) as exit_info:
            getattr(importlib.import_module(module), function)(["--version"])
        assert exit_info.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"sdlora {__version__} (torch "), name


def test_migrate_carries_the_new_options_over():
    from sdlora.tools.migrate import migrate
    from tests.integration.test_tools_migrate import overrides

    command, _ = migrate(
        "accelerate launch train_network.py --optimizer_type AdamWScheduleFree --weighted_captions "
        "--persistent_data_loader_workers --log_with wandb --wandb_run_name r1 --log_tracker_name proj "
        '--metadata_title T --metadata_author A --training_comment "a comment" --mem_eff_attn '
        "--network_args down_lr_weight=sine+.5 block_lr_zero_threshold=0.6 --train_data_dir /data/x",
        model="tiny",
    )
    cfg = compose_config(*overrides(command))
    assert cfg.optimizer._target_ == "schedulefree.AdamWScheduleFree" and cfg.logger._target_.endswith("WandbLogger")
    assert (cfg.logger.name, cfg.logger.project) == ("r1", "proj")
    assert cfg.data.weighted_captions and cfg.data.persistent_workers and cfg.model.attention == "sdpa"
    assert (cfg.save.metadata.title, cfg.save.metadata.author, cfg.save.training_comment) == ("T", "A", "a comment")
    assert cfg.network.block_lr_weight[0] == 0.0 and len(cfg.network.block_lr_weight) == 25
    plain, _ = migrate("accelerate launch train_network.py --train_data_dir /data/x", model="tiny")
    assert not compose_config(*overrides(plain)).data.persistent_workers  # kohya's default: off

"""Bad input gives one readable message naming the file or option, exit code ≠ 0, no traceback and no LoRA file;
unusable images are skipped with a warning that names them."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sdlora.errors import SdloraError
from sdlora.run import train
from tests.helpers.cli import assert_clean_failure, run_cli
from tests.helpers.config import compose_config, tiny_overrides


def test_nonexistent_model_path(small_dataset, tmp_path):
    missing = tmp_path / "models" / "nope.safetensors"
    result, run_dir = run_cli(tmp_path, "model=sd15", f"model.pretrained={missing}", f"data.train_dir={small_dataset}")
    assert_clean_failure(result, run_dir, f"model.pretrained='{missing}' does not exist")


def test_nonexistent_train_dir(tmp_path):
    missing = tmp_path / "nowhere"
    result, run_dir = run_cli(tmp_path, "model=tiny", f"data.train_dir={missing}")
    assert_clean_failure(result, run_dir, f"data.train_dir='{missing}' does not exist")


def test_empty_dataset_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result, run_dir = run_cli(tmp_path, "model=tiny", f"data.train_dir={tmp_path / 'empty'}")
    assert_clean_failure(result, run_dir, f"data.train_dir='{tmp_path / 'empty'}' has no '<repeats>_<name>' subfolders")


def test_subfolder_without_images(tmp_path):
    (tmp_path / "ds" / "5_thing").mkdir(parents=True)
    (tmp_path / "ds" / "5_thing" / "notes.txt").write_text("no images here")
    result, run_dir = run_cli(tmp_path, "model=tiny", f"data.train_dir={tmp_path / 'ds'}")
    assert_clean_failure(result, run_dir, "has no usable images", "5_thing")


def test_bad_network_options_stop_before_the_model_is_loaded(small_dataset, tmp_path):
    """sd15 with a model path that exists but is no checkpoint: the network problems are reported first, together."""
    fake = tmp_path / "not_a_model.safetensors"
    fake.write_bytes(b"x")
    missing = tmp_path / "missing_lora.safetensors"
    result, run_dir = run_cli(
        tmp_path, "model=sd15", f"model.pretrained={fake}", f"data.train_dir={small_dataset}",
        "network.dropout=1.5", "network.scale_weight_norms=-1", "network.conv_rank=4", f"network.weights={missing}",
    )  # fmt: skip
    assert_clean_failure(
        result, run_dir, "4 problem(s)", "network.dropout must be in [0, 1)", "network.scale_weight_norms must be ≥ 0",
        "network.conv_rank is set, but network=lora", f"network.weights='{missing}' does not exist",
    )  # fmt: skip


def test_a_lora_for_another_model_is_a_clear_error(small_dataset, tmp_path):
    from sdlora.config.schema import NetworkConfig
    from sdlora.models.tiny import TinySDXLFamily
    from sdlora.network.build import build_network
    from sdlora.network.io import save_lora

    family = TinySDXLFamily()
    network = build_network(family, family.load(), NetworkConfig())
    xl = save_lora(tmp_path / "xl_lora.safetensors", network.kohya_tensors())
    result, run_dir = run_cli(tmp_path, *tiny_overrides(small_dataset, f"network.weights={xl}"))
    assert_clean_failure(result, run_dir, "xl_lora.safetensors", "another model family")


def test_caption_file_that_is_not_utf8(small_dataset, tmp_path):
    bad = small_dataset / "2_tok" / "img1.txt"
    bad.write_bytes(b"caf\xe9 latin-1")
    result, run_dir = run_cli(tmp_path, *tiny_overrides(small_dataset))
    assert_clean_failure(result, run_dir, f"caption file {bad} is not valid UTF-8")


def test_wrong_model_family(small_dataset, tmp_path):
    from sdlora.models.ldm_keys import write_checkpoint
    from sdlora.models.tiny import TinySDXLFamily

    xl = TinySDXLFamily().load()
    ckpt = write_checkpoint(
        tmp_path / "xl.safetensors", unet=xl.unet, vae=xl.vae, text_encoders=xl.text_encoders, layout="sdxl"
    )
    result, run_dir = run_cli(tmp_path, *tiny_overrides(small_dataset, f"model.pretrained={ckpt}", model="sd15"))
    assert_clean_failure(result, run_dir, "is an SDXL model but model=sd15 expects SD 1.x: use model=sdxl")


@pytest.mark.parametrize("key", ["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight",
                                 "unet.mid_block.attentions.0.proj_in.lora_A.weight"])  # fmt: skip
def test_a_lora_file_given_as_the_base_model_says_so(small_dataset, tmp_path, key):
    """Before, diffusers' own advice about from_single_file and text encoders came back."""
    from safetensors.torch import save_file

    lora = tmp_path / "my_lora.safetensors"
    save_file({key: torch.zeros(4, 8)}, str(lora))
    cfg = compose_config(*tiny_overrides(small_dataset, f"model.pretrained={lora}", model="sd15"))
    with pytest.raises(SdloraError, match="is a LoRA file, not a base model: give the Stable Diffusion checkpoint"):
        train(cfg, tmp_path / "run")


def test_corrupt_and_tiny_images_are_skipped_with_a_warning(small_dataset, tmp_path):
    folder = small_dataset / "2_tok"
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.new("RGB", (4, 4)).save(folder / "dot.png")
    summary = train(compose_config(*tiny_overrides(small_dataset)), tmp_path / "run")
    import json

    plan = json.loads((tmp_path / "run" / "data_plan.json").read_text())
    warnings = "\n".join(plan["warnings"])
    assert "broken.png" in warnings and "dot.png" in warnings
    assert plan["num_images"] == 4 and summary["files"]

    with pytest.raises(SdloraError, match="broken.png"):
        train(compose_config(*tiny_overrides(small_dataset, "data.strict=true")), tmp_path / "strict")


def test_only_unusable_images_is_an_error(tmp_path):
    folder = tmp_path / "ds" / "3_x"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(SdloraError, match="has no usable images"):
        train(compose_config(*tiny_overrides(tmp_path / "ds")), tmp_path / "run")


def test_non_finite_loss_names_the_step_and_images(small_dataset, tmp_path):
    """A NaN loss stops training with the step and the batch's images (here: NaN pixels fed to the VAE)."""
    from sdlora.config.schema import NetworkConfig
    from sdlora.data.batch import Batch
    from sdlora.diffusion.objective import DiffusionObjective
    from sdlora.lit.module import LoRATrainingModule
    from sdlora.models.tiny import TinySD15Family
    from sdlora.network.build import build_network

    family = TinySD15Family()
    components = family.load()
    cfg = NetworkConfig(rank=2, alpha=1.0, train_unet=True, train_text_encoder=False)
    module = LoRATrainingModule(
        family, components, build_network(family, components, cfg), optimizer=None, scheduler=None,
        learning_rates={"default": 1e-4}, total_steps=1, batches_per_epoch=1,
        objective=DiffusionObjective(components.prediction_type),
    )  # fmt: skip
    module.on_fit_start()
    batch = Batch(
        pixels=torch.full((1, 3, 64, 64), float("nan")),
        captions=["x"],
        size_cond=torch.tensor([[64.0, 64, 0, 0, 64, 64]]),
        loss_weight=torch.ones(1),
        paths=["/data/2_tok/img0.png"],
    )
    module.training_step(batch, 0)  # the loss is read once backward is queued, before the optimizer step
    with pytest.raises(SdloraError, match=r"the loss became nan in step 1 .*img0.png.*learning rate"):
        module.on_before_optimizer_step(None)

"""sdlora-migrate: kohya_ss GUI configs (written here from the GUI's saved keys), an sd-scripts .toml and a command
line become overrides that compose and train; the README's kohya table is the one the migration follows."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sdlora.errors import SdloraError
from sdlora.network.io import load_lora
from sdlora.run import train
from sdlora.tools.export_model import export_model
from sdlora.tools.kohya_optimizers import optimizer_markdown
from sdlora.tools.kohya_options import ROWS, markdown
from sdlora.tools.migrate import migrate
from sdlora.tools.migrate_rules import RULES
from tests.helpers.config import CONF_DIR, ROOT, compose_config
from tests.helpers.processes import run_python

#: Fields of a kohya_ss v21.8 LoRA config saved by the GUI (with the GUI's own "" / "0" for empty fields).
GUI_BASE = {
    "LoRA_type": "Standard", "adaptive_noise_scale": 0, "additional_parameters": "", "block_alphas": "",
    "block_dims": "", "block_lr_zero_threshold": "", "bucket_no_upscale": False, "bucket_reso_steps": 64,
    "cache_latents": True, "cache_latents_to_disk": False, "caption_dropout_every_n_epochs": 0.0,
    "caption_dropout_rate": 0, "caption_extension": ".txt", "clip_skip": "1", "color_aug": False, "conv_alpha": 1,
    "conv_block_alphas": "", "conv_block_dims": "", "conv_dim": 1, "decompose_both": False,
    "dim_from_weights": False, "down_lr_weight": "", "enable_bucket": True, "epoch": 1, "factor": -1,
    "flip_aug": False, "full_bf16": False, "full_fp16": False, "gradient_accumulation_steps": "1",
    "gradient_checkpointing": False, "keep_tokens": "0", "learning_rate": 0.0001, "logging_dir": "",
    "lora_network_weights": "", "lr_scheduler": "cosine", "lr_scheduler_args": "", "lr_scheduler_num_cycles": "",
    "lr_scheduler_power": "", "lr_warmup": 10, "max_bucket_reso": 1024, "max_data_loader_n_workers": "0",
    "max_resolution": "64,64", "max_timestep": 1000, "max_token_length": "75", "max_train_epochs": "",
    "max_train_steps": "2", "mem_eff_attn": False, "mid_lr_weight": "", "min_bucket_reso": 64, "min_snr_gamma": 5,
    "min_timestep": 0, "mixed_precision": "no", "model_list": "custom", "module_dropout": 0,
    "multires_noise_discount": 0.3, "multires_noise_iterations": 6, "network_alpha": 2, "network_dim": 4,
    "network_dropout": 0, "no_token_padding": False, "noise_offset": 0.05, "noise_offset_type": "Multires",
    "num_cpu_threads_per_process": 2, "optimizer": "AdamW8bit", "optimizer_args": "weight_decay=0.05 betas=0.9,0.99",
    "output_name": "migrated", "persistent_data_loader_workers": False, "prior_loss_weight": 1.0,
    "random_crop": False, "rank_dropout": 0, "reg_data_dir": "", "resume": "", "sample_every_n_epochs": 0,
    "sample_every_n_steps": 0, "sample_prompts": "", "sample_sampler": "euler_a", "save_every_n_epochs": 0,
    "save_every_n_steps": 0, "save_last_n_steps": 0, "save_last_n_steps_state": 0, "save_model_as": "safetensors",
    "save_precision": "fp16", "save_state": False, "scale_v_pred_loss_like_noise_pred": False,
    "scale_weight_norms": 0, "sdxl": False, "sdxl_cache_text_encoder_outputs": False, "sdxl_no_half_vae": False,
    "seed": "7", "shuffle_caption": True, "stop_text_encoder_training_pct": 0, "text_encoder_lr": 5e-05,
    "train_batch_size": 1, "train_on_input": True, "training_comment": "", "unet_lr": 0.0001, "unit": 1,
    "up_lr_weight": "", "use_cp": False, "use_wandb": False, "v2": False, "v_parameterization": False,
    "v_pred_like_loss": 0, "vae": "", "vae_batch_size": 0, "weighted_captions": False, "xformers": "sdpa",
}  # fmt: skip


CPU = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]


def overrides(command: str) -> list[str]:
    tokens = shlex.split(command)
    assert tokens[:2] == ["python", "train.py"]
    return tokens[2:]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("migrate")
    return {m: export_model(m, root / f"{m}.safetensors") for m in ("tiny", "tiny_sdxl")}


def gui_config(path: Path, **changes) -> Path:
    path.write_text(json.dumps({**GUI_BASE, **changes}), encoding="utf-8")
    return path


def test_gui_standard_config_composes_and_trains(checkpoints, small_dataset, tmp_path):
    config = gui_config(tmp_path / "standard.json", pretrained_model_name_or_path=str(checkpoints["tiny"]),
                        train_data_dir=str(small_dataset), output_dir=str(tmp_path / "out"))  # fmt: skip
    command, notes = migrate(str(config), model="tiny")
    cfg = compose_config(*overrides(command), *CPU)
    assert cfg.model.pretrained == str(checkpoints["tiny"]) and cfg.model._target_.endswith("TinySD15Family")
    assert (cfg.network.rank, cfg.network.alpha, cfg.network.unet_lr, cfg.network.text_encoder_lr) == (4, 2, 1e-4, 5e-5)
    assert cfg.optimizer._target_ == "bitsandbytes.optim.AdamW8bit" and cfg.optimizer.lr == 1e-4
    assert cfg.optimizer.weight_decay == 0.05 and list(cfg.optimizer.betas) == [0.9, 0.99]
    assert cfg.scheduler._target_.endswith("cosine") and cfg.scheduler.warmup_steps == 0.1  # lr_warmup 10 %
    assert (cfg.loss.multires_noise_iterations, cfg.loss.noise_offset, cfg.loss.min_snr_gamma) == (6, None, 5)
    assert (cfg.data.resolution, cfg.data.cache_latents, cfg.data.shuffle_caption) == ("64", "memory", True)
    assert (cfg.trainer.max_steps, cfg.save.precision, cfg.save.output_name, cfg.seed) == (2, "fp16", "migrated", 7)
    assert "--" not in " ".join(notes) or all("not available" not in n for n in notes)

    summary = train(cfg, tmp_path / "run")
    assert summary["steps"] == 2
    _, meta = load_lora(tmp_path / "run" / "migrated.safetensors")
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "2.0")


def test_gui_sdxl_locon_config_with_unet_only_and_prodigy(checkpoints, small_dataset, tmp_path):
    config = gui_config(
        tmp_path / "locon.json", LoRA_type="Kohya LoCon", conv_dim=2, conv_alpha=1, sdxl=True,
        pretrained_model_name_or_path=str(checkpoints["tiny_sdxl"]), train_data_dir=str(small_dataset),
        optimizer="Prodigy", optimizer_args="decouple=True d_coef=2", learning_rate=1.0, text_encoder_lr=0,
        unet_lr=1.0, lr_scheduler="constant", lr_warmup=0, sdxl_cache_text_encoder_outputs=True,
        sdxl_no_half_vae=True, network_dropout=0.1, rank_dropout=0.1, noise_offset_type="Original",
        shuffle_caption=False,
        max_train_steps="", max_train_epochs="1", mixed_precision="no", full_bf16=False, training_comment="kept?",
        logging_dir="/somewhere", mem_eff_attn=True,
    )  # fmt: skip
    command, notes = migrate(str(config), model="tiny_sdxl")
    cfg = compose_config(*overrides(command), *CPU, "trainer.max_steps=2")
    assert cfg.model._target_.endswith("TinySDXLFamily") and cfg.network.name == "locon"
    assert (cfg.network.conv_rank, cfg.network.conv_alpha, cfg.network.train_text_encoder) == (2, 1.0, False)
    assert (cfg.network.dropout, cfg.network.rank_dropout, cfg.network.unet_lr) == (0.1, 0.1, 1.0)
    assert cfg.optimizer._target_ == "prodigyopt.Prodigy" and cfg.optimizer.d_coef == 2
    assert cfg.data.cache_text_encoder_outputs and cfg.precision.no_half_vae and cfg.precision.name == "fp32"
    assert (cfg.loss.noise_offset, cfg.loss.multires_noise_iterations) == (0.05, None)  # Original: no multires
    assert (cfg.trainer.max_epochs, cfg.trainer.max_steps) == (1, 2)
    text = "\n".join(notes)
    assert "not available in sdlora (left out): logging_dir" in text  # listed by name, never dropped silently
    assert cfg.save.training_comment == "kept?" and cfg.model.attention == "sdpa"  # mem_eff_attn: torch's SDPA
    assert "mem_eff_attn: model.attention=sdpa" in text
    assert train(cfg, tmp_path / "run")["steps"] == 2


def test_lycoris_types_and_their_options_are_mapped(tmp_path):
    """The GUI keeps every type's fields in its file: only those the chosen type reads are carried over."""
    config = gui_config(tmp_path / "loha.json", LoRA_type="LyCORIS/LoHa", conv_dim=4, use_cp=True, factor=8,
                        unit=2, dora_wd=True, train_data_dir="/data/x")  # fmt: skip
    command, notes = migrate(str(config))
    cfg = compose_config(*overrides(command))
    assert cfg.network.name == "loha" and cfg.network.conv_rank == 4
    assert cfg.network.use_tucker and cfg.network.weight_decompose
    assert cfg.network.factor == -1 and cfg.network.unit is None  # LoKr's and DyLoRA's fields are not LoHa's
    assert not any(n.startswith("not yet available") for n in notes)
    dylora = gui_config(tmp_path / "dylora.json", LoRA_type="LyCORIS/DyLoRA", unit=4, train_data_dir="/data/x")
    assert compose_config(*overrides(migrate(str(dylora))[0])).network.block_size == 4  # the GUI's "unit"
    locon = gui_config(tmp_path / "locon.json", LoRA_type="LyCORIS/LoCon", LyCORIS_preset="attn-mlp",
                       train_data_dir="/data/x")  # fmt: skip
    command = migrate(str(locon))[0]
    assert "network.preset=attn-mlp" in command  # LyCORIS's spelling, which train.py takes
    assert compose_config(*overrides(command)).network.preset == "attn-mlp"


def test_toml_and_command_line(tmp_path):
    dataset = tmp_path / "dataset.toml"
    dataset.write_text("[general]\nshuffle_caption = true\ncaption_extension = '.txt'\n[[datasets]]\nresolution = "
                       "[768, 512]\nbatch_size = 2\n[[datasets.subsets]]\nimage_dir = '/data/dog'\nnum_repeats = 10\n"
                       "class_tokens = 'sks dog'\n[[datasets.subsets]]\nimage_dir = '/data/reg'\nis_reg = true\n"
                       "keep_tokens_separator = '|'\n")  # fmt: skip
    toml = tmp_path / "config.toml"
    toml.write_text("[model_arguments]\npretrained_model_name_or_path = '/m/sdxl.safetensors'\nsdxl = true\n"
                    "[training_arguments]\nnetwork_args = ['conv_dim=8', 'conv_alpha=4']\nlearning_rate = 1e-4\n"
                    f"optimizer_type = 'AdamW'\nlr_scheduler = 'cosine_with_restarts'\nlr_scheduler_num_cycles = 3\n"
                    f"dataset_config = '{dataset}'\nmax_train_epochs = 4\n")  # fmt: skip
    command, notes = migrate(str(toml))
    cfg = compose_config(*overrides(command))
    assert cfg.model._target_.endswith("SDXLFamily") and cfg.network.name == "locon" and cfg.network.conv_rank == 8
    assert (cfg.network.rank, cfg.data.enable_bucket) == (4, False)  # sd-scripts' defaults where they differ
    assert cfg.scheduler.num_cycles == 3 and (cfg.trainer.max_epochs, cfg.trainer.max_steps) == (4, -1)
    assert cfg.data.resolution == "768,512" and cfg.data.batch_size == 2 and cfg.data.shuffle_caption
    assert [s.dir for s in cfg.data.subsets] == ["/data/dog", "/data/reg"] and cfg.data.subsets[1].is_reg
    assert any("keep_tokens_separator" in n for n in notes)

    line = (
        "accelerate launch --multi_gpu --num_processes 2 train_network.py --v2 --v_parameterization "
        "--network_dim 16 --network_alpha 8 --optimizer_type Lion --resolution 768 --train_data_dir '/my data' "
        "--network_module lycoris.kohya --network_args algo=lokr --max_train_steps 100 --save_precision float"
    )
    command, notes = migrate(line)
    cfg = compose_config(*overrides(command))
    assert cfg.model._target_.endswith("SD2VFamily") and cfg.trainer.strategy.startswith("ddp")
    assert cfg.trainer.devices == 2
    assert (cfg.network.rank, cfg.network.alpha, cfg.data.train_dir, cfg.save.precision) == (16, 8, "/my data", "fp32")
    assert cfg.network.name == "lokr"


@pytest.mark.parametrize(
    ("source", "name"),
    [({"LoRA_type": "LyCORIS/Diag-OFT"}, "oft"), ({"LoRA_type": "LyCORIS/BOFT"}, "boft"),
     ({"LoRA_type": "LyCORIS/GLoRA"}, "glora"), ({"LoRA_type": "LyCORIS/Native Fine-Tuning"}, "full"),
     ({"network_module": "lycoris.kohya", "algo": "diag-oft"}, "oft")],
)  # fmt: skip
def test_the_later_guis_lycoris_types_are_mapped(tmp_path, source, name):
    """The GUI's types after v21.8.8 (and sd-scripts' algo names for them) train the sdlora type of that name."""
    if "LoRA_type" in source:
        config = str(gui_config(tmp_path / "c.json", train_data_dir="/data/x", constrain=0.001, **source))
    else:
        config = f"train_network.py --network_module {source['network_module']} --network_args algo={source['algo']}"
    command, notes = migrate(config)
    cfg = compose_config(*overrides(command))
    assert cfg.network.name == name
    assert not any(n.startswith("not yet available") for n in notes)
    if name in ("oft", "boft") and "LoRA_type" in source:
        assert cfg.network.constraint == 0.001  # the GUI's "constrain"


def test_the_guis_typed_in_sample_prompts_are_saved_with_the_experiment(small_dataset, tmp_path):
    """The GUI keeps its sample prompts as text (it writes them to <output_dir>/sample/prompt.txt): an experiment
    keeps them in a file beside it; a printed command cannot, so it leaves sample images out and says so."""
    from sdlora.config.checks import check_config
    from sdlora.sampling.prompts import load_prompts

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    text = "a photo of sks dog --w 64 --h 64 --s 4\nsks dog on a beach --n blurry"
    config = gui_config(tmp_path / "c.json", train_data_dir=str(small_dataset), sample_prompts=text,
                        sample_every_n_steps=1, output_dir=str(tmp_path / "out"))  # fmt: skip

    command, notes = migrate(str(config), model="tiny", conf_dir=str(conf))
    assert "sample." not in command.replace("sample.sampler", "")
    assert any(n.startswith("not available in sdlora (left out): sample_prompts") and "sample.every_n_steps" in n
               for n in notes)  # fmt: skip
    check_config(compose_config(*overrides(command)))  # the command runs (no sample trigger without prompts)

    result, notes = migrate(str(config), model="tiny", write_experiment="with_prompts", conf_dir=str(conf))
    saved = conf / "experiment" / "with_prompts.prompts.txt"
    assert result == "python train.py experiment=with_prompts"
    assert notes[0] == f"wrote {saved} (the config's sample prompts)" and not any("sample_prompts" in n for n in notes)
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=with_prompts"])
    check_config(cfg)
    assert (cfg.sample.prompts, cfg.sample.every_n_steps) == (str(saved.resolve()), 1)
    prompts, _ = load_prompts(cfg.sample.prompts)
    assert [(p.prompt, p.negative_prompt, p.width) for p in prompts] == [
        ("a photo of sks dog", "", 64), ("sks dog on a beach", "blurry", None)]  # fmt: skip
    (conf / "experiment" / "with_prompts.yaml").unlink()
    with pytest.raises(Exception, match="prompts.txt exists"):  # neither file is replaced without --overwrite
        migrate(str(config), model="tiny", write_experiment="with_prompts", conf_dir=str(conf))


@pytest.mark.parametrize(
    "changes",
    [
        {"LoRA_type": "LyCORIS/iA3", "network_dim": 1024, "network_alpha": 1024, "network_dropout": 0.3,
         "scale_weight_norms": 1, "gradient_accumulation_steps": 1.0},
        {"LoRA_type": "LyCORIS/LoKr", "bucket_no_upscale": True, "bucket_reso_steps": 1, "factor": 6,
         "additional_parameters": '--lr_scheduler_type "CosineAnnealingLR" --lr_scheduler_args "T_max=1000" '
                                  '"eta_min=0e-0"'},
        {"LoRA_type": "LyCORIS/LoCon", "max_resolution": "512,650", "bucket_reso_steps": 64.0, "enable_bucket": False,
         "save_every_n_epochs": 1, "save_last_n_steps_state": 1, "sample_every_n_epochs": 1,
         "lr_scheduler": "constant", "lr_scheduler_num_cycles": "1"},
    ],
    ids=["ia3", "lokr", "locon"],
)  # fmt: skip
def test_values_the_guis_presets_hold_are_fitted_to_what_sdlora_accepts(small_dataset, tmp_path, changes):
    """Modelled on presets kohya_ss ships: whole numbers saved as floats, a bucket step of 1, a side of 650 px, a
    bare scheduler class name, rank/alpha/dropout/max-norm for iA3 (kohya passes them; LyCORIS ignores them), a
    state-retention count without states, a sample trigger without prompts. The command passes sdlora's checks, and
    every change is said."""
    from sdlora.config.checks import check_config

    config = gui_config(tmp_path / "c.json", train_data_dir=str(small_dataset), **changes)
    command, notes = migrate(str(config))
    cfg = compose_config(*overrides(command), "model.attention=sdpa", "dry_run=true")  # no checkpoint here
    check_config(cfg)
    text = "\n".join(notes)
    if changes["LoRA_type"] == "LyCORIS/iA3":
        assert (cfg.network.rank, cfg.network.alpha, cfg.network.dropout, cfg.network.scale_weight_norms) == (
            None, None, 0.0, 0.0)  # fmt: skip
        line = next(n for n in notes if "network=ia3 does not read them" in n)
        assert all(f"network.{k}" in line for k in ("rank", "alpha", "dropout", "scale_weight_norms", "conv_rank"))
        assert cfg.trainer.accumulate_grad_batches == 1
    if changes["LoRA_type"] == "LyCORIS/LoKr":
        assert cfg.data.bucket_reso_steps == 64 and "bucket_reso_steps=1: " in text
        assert cfg.scheduler._target_ == "torch.optim.lr_scheduler.CosineAnnealingLR"  # sd-scripts' default module
        assert (cfg.scheduler.T_max, cfg.scheduler.eta_min) == (1000, 0.0)
    if changes["LoRA_type"] == "LyCORIS/LoCon":
        assert cfg.data.resolution == "512,648" and "resolution 512,650: " in text
        assert cfg.data.bucket_reso_steps == 64 and "bucket_reso_steps" not in text
        assert (cfg.save.every_n_epochs, cfg.save.last_n_steps_state, cfg.sample.every_n_epochs) == (1, None, None)
        assert "save.last_n_steps_state needs save.state=true; kohya ignores it: save.last_n_steps_state left" in text
        assert "need sample.prompts (a prompt file); kohya ignores it: sample.every_n_epochs left out" in text
        assert "does not apply" not in text  # sd-scripts' default number of cycles says nothing for a constant lr


@pytest.mark.parametrize(
    "changes",
    [{"LoRA_type": "Flux1", "flux1_checkbox": True}, {"sd3_checkbox": True},
     {"additional_parameters": "--network_module networks.lora_flux"}, {"t5xxl": "/m/t5xxl_fp16.safetensors"}],
)  # fmt: skip
def test_a_flux_or_sd3_config_is_refused_instead_of_becoming_an_sd15_run(tmp_path, changes):
    config = gui_config(tmp_path / "c.json", train_data_dir="/data/x", **changes)
    with pytest.raises(SdloraError, match="sdlora trains LoRAs for SD 1.x, 2.x and SDXL only"):
        migrate(str(config))


def test_the_guis_dynamo_backend_no_compiles_nothing(tmp_path):
    config = gui_config(tmp_path / "c.json", train_data_dir="/data/x", dynamo_backend="no")
    assert "compile_backend" not in migrate(str(config))[0]
    config = gui_config(tmp_path / "d.json", train_data_dir="/data/x", dynamo_backend="inductor")
    assert "model.compile_backend=inductor" in migrate(str(config))[0]


def test_sample_prompts_given_as_a_toml_list_are_its_lines(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    toml = tmp_path / "c.toml"
    toml.write_text('train_data_dir = "/data/x"\nsample_every_n_steps = 200\n'
                    'sample_prompts = ["a photo of sks, city street", "sks laughing --n blurry"]\n')  # fmt: skip
    migrate(str(toml), model="tiny", write_experiment="listed", conf_dir=str(conf))
    lines = (conf / "experiment" / "listed.prompts.txt").read_text().splitlines()
    assert lines == ["a photo of sks, city street", "sks laughing --n blurry"]


def test_a_command_lines_config_file_is_read_and_its_own_options_win(tmp_path):
    toml = tmp_path / "base.toml"
    toml.write_text('[network]\nnetwork_dim = 64\nnetwork_alpha = 32\n[training]\noptimizer_type = "Lion"\n'
                    'train_data_dir = "/data/x"\n')  # fmt: skip
    command, _ = migrate(f"accelerate launch sdxl_train_network.py --config_file {toml} --network_dim 16")
    cfg = compose_config(*overrides(command))
    assert (cfg.network.rank, cfg.network.alpha, cfg.data.train_dir) == (16, 32, "/data/x")
    assert cfg.optimizer._target_.endswith("Lion") and cfg.model._target_.endswith("SDXLFamily")
    with pytest.raises(SdloraError, match="--config_file .*missing.toml does not exist"):
        migrate(f"train_network.py --config_file {tmp_path / 'missing.toml'}")


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"epoch": "x", "max_train_steps": ""}, "epoch='x'"), ({"clip_skip": "two"}, "clip_skip='two'"),
     ({"lr_warmup": "ten"}, "lr_warmup='ten'"), ({"block_dims": "a,b"}, "block_dims='a,b'"),
     ({"optimizer_args": 'foo="unterminated'}, "optimizer_args="), ({"network_args": 5}, "network_args=5")],
)  # fmt: skip
def test_a_field_holding_something_unreadable_is_one_error_naming_it(tmp_path, changes, named):
    config = gui_config(tmp_path / "c.json", train_data_dir="/data/x", **changes)
    with pytest.raises(SdloraError, match=re.escape(named)):
        migrate(str(config))


def test_an_unclosed_quote_or_a_binary_file_is_one_error(tmp_path):
    with pytest.raises(SdloraError, match="cannot be split into words .No closing quotation"):
        migrate('accelerate launch train_network.py --output_name "x --network_dim 4')
    (tmp_path / "c.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(SdloraError, match="is not a text file"):
        migrate(str(tmp_path / "c.json"))


def test_the_command_reports_an_unreadable_field_without_a_traceback(tmp_path):
    config = gui_config(tmp_path / "c.json", train_data_dir="/data/x", clip_skip="two")
    result = run_python(["-m", "sdlora.tools.migrate", str(config)])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: clip_skip='two': not a value sdlora-migrate can read")


@pytest.mark.parametrize("text", ["[datasets]\nresolution = 512\n", 'datasets = "x"\n',
                                  "[[datasets]]\nsubsets = 3\n", 'general = 1\n'])  # fmt: skip
def test_a_dataset_config_of_another_shape_is_listed_not_a_traceback(tmp_path, text):
    (tmp_path / "ds.toml").write_text(text)
    (tmp_path / "c.toml").write_text(f'dataset_config = "{tmp_path / "ds.toml"}"\ntrain_data_dir = "/data/x"\n')
    command, notes = migrate(str(tmp_path / "c.toml"))
    assert "data.subsets" not in command
    listed = [n for n in notes if n.startswith("not available in sdlora (left out): dataset_config")]
    assert len(listed) == 1 and ("array of tables" in listed[0] or "must be a table" in listed[0])


def test_a_type_sdlora_does_not_have_is_listed_once_with_the_fields_it_set(tmp_path):
    config = gui_config(tmp_path / "c.json", LoRA_type="LyCORIS/Future", train_data_dir="/data/x", factor=8,
                        unit=None, train_on_input=False)  # fmt: skip
    command, notes = migrate(str(config))
    assert compose_config(*overrides(command)).network.name == "lora"
    listed = [n for n in notes if n.startswith("not yet available")]
    assert listed == [
        "not yet available: network=LyCORIS/Future (LoRA type LyCORIS/Future): the command trains network=lora "
        "meanwhile",
        "not yet available: its options factor=8",  # an empty "unit" is not one of them
    ]


def test_write_experiment_is_the_same_config(small_dataset, tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    config = gui_config(tmp_path / "c.json", train_data_dir=str(small_dataset), LoRA_type="Kohya LoCon", conv_dim=3,
                        output_dir=str(tmp_path / "out"))  # fmt: skip
    command, _ = migrate(str(config), model="tiny")
    result, _ = migrate(str(config), model="tiny", write_experiment="from_gui", conf_dir=str(conf))
    assert result == "python train.py experiment=from_gui"
    text = (conf / "experiment" / "from_gui.yaml").read_text()
    assert text.startswith("# @package _global_") and "override /network: locon" in text

    from hydra import compose, initialize_config_dir

    import sdlora.config  # noqa: F401

    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        via_experiment = compose("train", overrides=["experiment=from_gui"])
    direct = compose_config(*overrides(command))
    assert OmegaConf.to_container(via_experiment) == OmegaConf.to_container(direct)
    with pytest.raises(Exception, match="exists"):
        migrate(str(config), model="tiny", write_experiment="from_gui", conf_dir=str(conf))


# ------------------------------------------------------------------------------------ the one table and README
def _between(text: str, name: str) -> str:
    start = text.index(f"<!-- {name}:start")
    return text[text.index("\n", start) + 1 : text.index(f"<!-- {name}:end -->")].rstrip("\n")


def test_readme_tables_are_generated_from_the_mapping():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert _between(readme, "kohya-table") == markdown()
    assert _between(readme, "optimizer-table") == optimizer_markdown()


def _names(cell: str) -> set[str]:
    names = set()
    for span in re.findall(r"`([^`]+)`", cell):
        if " " in span:
            names |= {t[2:] for t in span.split() if t.startswith("--")}
        else:
            names |= {span.replace("(", "").replace(")", ""), re.sub(r"\(.*?\)", "", span)}
    return {n for n in names if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)}


def test_every_option_of_the_table_is_mapped_and_every_mapping_is_in_the_table():
    informational = ("—", "(", "GUI LoRA types", "GUI `xformers`", "a saved GUI config")
    for row in ROWS:
        if row.kohya.startswith(informational) or ".py" in row.kohya:
            continue
        names = _names(row.kohya) - {"network_args", "xformers", "sdpa", "none", "Original", "Multires"}
        assert names <= row.maps.keys(), (row.kohya, names - row.maps.keys())
        assert row.maps.keys() <= _names(row.kohya) | {"LoRA_type", "network_module"}, row.kohya
        for target in row.maps.values():
            assert not target.startswith("@") or target[1:] in RULES, target


def test_migrate_cli_errors_are_one_line(tmp_path):
    result = run_python(["-m", "sdlora.tools.migrate", str(tmp_path / "missing.json")], timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: config='{tmp_path / 'missing.json'}' does not exist "
        "(give a .json / .toml file or a quoted command line)"
    ]

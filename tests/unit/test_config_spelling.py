"""Unknown keys on the command line: found before Hydra, named with what was probably meant (sdlora.config.spelling)."""

from __future__ import annotations

import pytest

from sdlora.config.spelling import (
    check_command_line,
    command_line_keys,
    suggestion,
    unknown_key_message,
    unknown_part,
)


def test_only_plain_overrides_are_read():
    argv = [
        "-m",
        "--config-path",
        "/x=y",
        "-cn",
        "config",
        "model=tiny",
        "+save.extra=1",
        "++optimizer.eps=1",
        "~ema",
        "hydra.run.dir=/r",
        "hydra/launcher=joblib",
        "model@other=sd15",
        "network.rank=4,8",
        "--cfg=job",
    ]
    assert command_line_keys(argv) == ["model", "network.rank"]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "unknown"),
    [("network.rank", None), ("model", None), ("optimizer.anything", None), ("scheduler.a.b", None),
     ("data.subsets", None), ("data.subsets.0.dir", None), ("network.dim", "network.dim"),
     ("model.foo.bar", "model.foo"), ("netwrk.rank", "netwrk"), ("loss_type", "loss_type")],
)  # fmt: skip
def test_the_first_unknown_part_of_a_key(key, unknown):
    """Open nodes (the optimizer's arguments), lists and dicts are left to Hydra and the checks."""
    assert unknown_part(key) == unknown


@pytest.mark.parametrize(
    ("key", "meant"),
    [("loss_type", "kohya's loss_type is loss.type"), ("network.dim", "kohya's network_dim is network.rank"),
     ("learning_rate", "kohya's learning_rate is optimizer.lr"),
     ("data.noise_offset", "did you mean loss.noise_offset?"),
     ("trainer.max_step", "did you mean trainer.max_steps"), ("netwrk", "did you mean network?")],
)  # fmt: skip
def test_what_was_meant_comes_from_the_kohya_table_or_the_schema(key, meant):
    assert meant in suggestion(key)


def test_nothing_close_still_says_where_every_key_is_listed():
    assert unknown_key_message("model.foo") == (
        "unknown option model.foo: model has no such key (python train.py --help all lists every key)"
    )


def test_config_groups_and_other_config_folders():
    assert check_command_line(["experiment=demo", "debug=fdr", "hparams_search=optuna", "model=tiny"]) == []
    assert check_command_line(["mygroup=x"])[0].startswith("unknown option mygroup: no such key or config group")
    for extra in (["-cd", "/my/conf"], ["--config-dir=/my/conf"], ["hydra.searchpath=[file:///my/conf]"]):
        assert check_command_line([*extra, "mygroup=x"]) == []  # a group of the other folder, for Hydra to judge
        assert check_command_line([*extra, "network.dim=8"]) != []  # the schema's nodes are known anyway
    assert len(check_command_line(["network.dim=8", "loss_type=huber", "network.rank=4"])) == 2


@pytest.mark.parametrize(
    ("override", "meant"),
    [("optimizer=AdamW8bit", "kohya's AdamW8bit is optimizer=adamw8bit here"),
     ("network=LyCORIS/LoHa", "kohya's LyCORIS/LoHa is network=loha here"),
     ("precision=bf16", "did you mean precision=bf16_mixed"), ("model=sdxl_base", "did you mean model=sdxl?"),
     ("network=lora,lohaa", "option network=lohaa: conf/network/ has no lohaa.yaml — did you mean network=loha"),
     ("scheduler=cosine_annealing", "has no cosine_annealing.yaml (its options: adafactor, constant,")],
)  # fmt: skip
def test_a_groups_unknown_option_says_what_was_meant(override, meant):
    (problem,) = check_command_line([override])
    assert meant in problem


def test_known_options_sweeps_and_other_folders_are_left_alone():
    assert check_command_line(["network=lora,loha", "logger=null", "ema=default", "trainer=ddp"]) == []
    assert check_command_line(["network=choice(lora,lohaa)", "model=${oc.env:M}"]) == []  # Hydra's to judge
    assert check_command_line(["-cd", "/my/conf", "optimizer=mine"]) == []

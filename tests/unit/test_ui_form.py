"""The web UI's form is generated from the typed schema and conf/: it covers every key of the composed config, the
command it builds composes to the same config as the one typed by hand, and a new schema key appears without UI
code. Also the server's binding and folder rules, and the tool forms built from the tools' parsers."""

from __future__ import annotations

import dataclasses
import json

import pytest
from omegaconf import OmegaConf

pytest.importorskip("gradio", reason="the web UI needs the ui extra (pip install -e '.[ui]')")

from sdlora.errors import SdloraError
from tests.helpers.config import CONF_DIR, EXAMPLE_DATA, ROOT, compose_config

PRESETS = ("sd15", "sd2", "sd2_v", "sdxl", "tiny", "tiny_sd2_v", "tiny_sdxl")


@pytest.fixture(scope="module")
def form():
    from sdlora.ui.form import Form

    return Form(CONF_DIR)


def _leaves(node, prefix="") -> set[str]:
    keys = set()
    for key, value in node.items():
        if OmegaConf.is_dict(value) and key not in ("optimizer", "scheduler", "logger"):
            keys |= _leaves(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


@pytest.mark.parametrize("preset", PRESETS)
def test_the_form_covers_every_key_of_the_composed_config(form, preset):
    cfg = compose_config(f"model={preset}")
    assert _leaves(cfg) <= set(form.keys), _leaves(cfg) - set(form.keys)
    shown = form.values_for([f"model={preset}"])
    optimizer = shown[form.index[(False, "optimizer")]]
    for argument in cfg.optimizer:  # the optimizer's arguments are in its node box or fields of their own
        if argument != "_partial_":
            assert f"{argument}:" in optimizer or f"optimizer.{argument}" in form.keys
    assert shown[form.index[(True, "model")]] == preset


def test_every_group_option_is_a_menu_choice(form):
    from sdlora.config.docs import group_options

    for group, options in group_options(CONF_DIR).items():
        assert {o.name for o in options} <= set(form.field(group, group=True).choices)


def _set(form, shown, key, value, group=False):
    shown[form.index[(group, key)]] = value


def test_the_command_of_a_form_composes_like_the_one_typed_by_hand(form):
    from sdlora.ui.form import command_line, parse_command

    shown = form.defaults()
    _set(form, shown, "model", "sdxl", group=True)
    _set(form, shown, "optimizer", "prodigy", group=True)
    shown = form.values_for(form.group_overrides(shown))  # a menu refills the form with that option's values
    _set(form, shown, "data.train_dir", "/data/my character")
    _set(form, shown, "data.caption_extension", ".txt")
    _set(form, shown, "network.rank", "16")
    _set(form, shown, "network.train_text_encoder", False)
    _set(form, shown, "data.cache_latents", "disk")
    _set(form, shown, "optimizer.lr", "0.5")
    _set(form, shown, "network.block_dims", "[4,8]")
    node = form.index[(False, "optimizer")]
    shown[node] = shown[node].replace("weight_decay: 0.0", "weight_decay: 0.01") + "\nfoo_extra: 3"
    overrides, problems = form.overrides(shown)
    assert not problems
    typed = [
        "model=sdxl", "optimizer=prodigy", "data.train_dir=/data/my character", "data.caption_extension=.txt",
        "network.rank=16", "network.train_text_encoder=false", "data.cache_latents=disk", "optimizer.lr=0.5",
        "network.block_dims=[4,8]", "optimizer.weight_decay=0.01", "+optimizer.foo_extra=3",
    ]  # fmt: skip
    assert sorted(o.split("=")[0] for o in overrides) == sorted(o.split("=")[0] for o in typed)
    assert compose_config(*overrides) == compose_config(*typed)
    line = command_line(overrides)
    assert "'data.train_dir=\"/data/my character\"'" in line  # quoted for Hydra and for the shell
    assert parse_command(line)[0] == overrides  # the shown command reads back as the same overrides
    assert form.values_for(overrides) == shown


def test_a_lycoris_preset_picked_in_the_form_composes(form):
    """The preset menu shows LyCORIS's spelling (attn-mlp); the command it makes is one train.py takes."""
    shown = form.values_for(["network=lycoris_locon"])
    field = form.field("network.preset")
    assert "attn-mlp" in field.choices
    _set(form, shown, "network.preset", "attn-mlp")
    overrides, problems = form.overrides(shown)
    assert not problems and "network.preset=attn-mlp" in overrides
    assert str(compose_config(*overrides).network.preset) == "attn-mlp"


def test_an_unchanged_form_is_the_bare_command_and_a_loaded_command_refills_it(form):
    from sdlora.ui.form import parse_command

    assert form.overrides(form.defaults()) == ([], {})
    overrides, notes = parse_command("python train.py experiment=demo network.rank=6 -m hydra.run.dir=/x")
    assert overrides == ["experiment=demo", "network.rank=6"] and len(notes) == 2
    shown = form.values_for(overrides)
    assert shown[form.index[(True, "model")]] == "tiny"  # chosen by the experiment
    assert form.overrides(shown)[0] == ["experiment=demo", "network.rank=6"]


def _extended_schema():
    from sdlora.config import schema

    @dataclasses.dataclass
    class _Network(schema.NetworkConfig):
        brand_new_option: float = 0.25  # a key added tomorrow [brand_new_kohya_option]

    @dataclasses.dataclass
    class _Train(schema.TrainConfig):
        network: _Network = dataclasses.field(default_factory=_Network)

    _Train.__annotations__["network"] = _Network  # resolved here (the test module postpones annotations)
    return _Train


def test_a_new_schema_key_appears_in_the_form_without_ui_code(monkeypatch):
    from sdlora.config import schema
    from sdlora.ui.form import Form

    monkeypatch.setattr(schema, "TrainConfig", _extended_schema())
    field = Form(CONF_DIR).field("network.brand_new_option")
    assert field.kind == "text" and field.tab == "Advanced" and "[brand_new_kohya_option]" in field.info
    assert "default: 0.25" in field.info


def test_checks_put_each_problem_beside_its_field(form):
    shown = form.values_for(["model=tiny", f"data.train_dir={EXAMPLE_DATA}"])
    assert form.check(shown)[1].ok
    _set(form, shown, "network.rank", "-1")
    _set(form, shown, "data.train_dir", "/no/such/folder")
    problems = form.check(shown)[1].problems
    assert "network.rank must be ≥ 1" in problems["network.rank"][0]
    assert "does not exist" in problems["data.train_dir"][0]
    _set(form, shown, "network.rank", "abc")  # a type error from Hydra's composition
    assert "network.rank" in form.check(shown)[1].problems
    _set(form, shown, "network.rank", "4,8")  # a sweep is not one run
    assert "sweep" in form.check(shown)[1].problems["network.rank"][0]


def test_a_saved_experiment_composes_like_the_form(form, tmp_path):
    from sdlora.ui.form import experiment_text

    overrides = ["model=tiny", "optimizer=lion", f"data.train_dir={EXAMPLE_DATA}", "network.rank=4",
                 "+optimizer.foo=1", "~logger"]  # fmt: skip
    conf = tmp_path / "conf"
    import shutil

    shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / "mine.yaml").write_text(experiment_text(form, overrides, "a test"), encoding="utf-8")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        saved = compose("train", overrides=["experiment=mine"])
    assert saved == compose_config(*overrides)
    with pytest.raises(SdloraError, match="cannot remove a key"):
        experiment_text(form, ["~optimizer.eps"], "a test")


def test_a_kohya_gui_config_is_imported_through_the_migration_tool(form, tmp_path):
    from sdlora.ui.actions import App
    from sdlora.ui.launch import Launcher
    from sdlora.ui.security import Roots

    gui = {"pretrained_model_name_or_path": str(tmp_path / "model.safetensors"), "sdxl": True, "network_dim": 32,
           "network_alpha": 16, "train_data_dir": str(tmp_path / "img"), "optimizer": "AdamW8bit", "epoch": 3,
           "max_train_steps": "", "learning_rate": 0.0002, "LoRA_type": "Standard", "sample_every_n_steps": 50,
           "sample_prompts": "a photo of sks dog --w 512"}  # fmt: skip
    (tmp_path / "gui.json").write_text(json.dumps(gui), encoding="utf-8")
    app = App(form, Roots.of([tmp_path, ROOT], ROOT), Launcher(ROOT))
    overrides, notes = app._migrate(str(tmp_path / "gui.json"))
    assert {"model=sdxl", "network.rank=32", "optimizer=adamw8bit"} <= set(overrides)
    assert not any(o.startswith("sample.every_n_steps") for o in overrides)  # typed-in prompts: as the printed command
    assert any("sample_prompts" in n and "--write-experiment" in n for n in notes)
    shown = form.values_for(overrides)
    assert shown[form.index[(False, "network.rank")]] == "32"
    with pytest.raises(SdloraError, match="outside the folders"):
        App(form, Roots.of([ROOT], ROOT), Launcher(ROOT))._migrate(str(tmp_path / "gui.json"))


def test_a_field_change_sends_one_value_and_the_session_state_holds_the_rest(form, tmp_path):
    """A field's change event sends its own value; the server keeps the others per session (``ShownForm``) and
    checks them all. A refill replaces every slot, so the change events it causes are echoes and are skipped."""
    import copy

    import gradio as gr

    from sdlora.ui.actions import App
    from sdlora.ui.launch import Launcher
    from sdlora.ui.security import Roots

    app = App(form, Roots.of([tmp_path, ROOT], ROOT), Launcher(ROOT), ["model=tiny"])
    state = copy.deepcopy(app.shown_form())  # what Gradio does for each new session
    assert state.lock is not app.shown_form().lock and state.values == app.initial_values
    rank = form.index[(False, "network.rank")]
    command, general, boxes, overrides = app.on_field(rank)("-1", state)
    assert "network.rank=-1" in command and "model=tiny" in command and overrides[0] == "model=tiny"
    assert "problem(s)" in general and set(boxes) >= {"problem-network-rank"}
    assert "network.rank must be ≥ 1" in boxes["problem-network-rank"]
    assert app.on_field(rank)("-1", state) == [gr.skip()] * 4  # the same value again: nothing to check
    train_dir = form.index[(False, "data.train_dir")]
    boxes = app.on_field(train_dir)(str(EXAMPLE_DATA / "<x>"), state)[2]  # the other slot is still -1
    assert "network.rank must be ≥ 1" in boxes["problem-network-rank"]
    assert "&lt;x&gt;" in boxes["problem-data-train_dir"]  # escaped
    before = list(state.values)
    refilled = app.refill(["model=tiny", "network.rank=8"], "runs/here", "", state)
    shown = form.values_for(["model=tiny", "network.rank=8"])
    assert state.values == shown and state.run_dir == "runs/here" and shown[rank] == "8"
    changed = [i for i, (new, old) in enumerate(zip(shown, before, strict=True)) if new != old]
    assert set(changed) == {rank, train_dir}  # only the fields that change are sent to the page
    assert [i for i, update in enumerate(refilled[: len(form.fields)]) if update != gr.skip()] == changed
    assert "problem-network-rank" not in refilled[len(form.fields) + 2]  # rank 8 is fine
    assert all(app.on_field(i)(value, state) == [gr.skip()] * 4 for i, value in enumerate(shown))  # the echoes
    assert app.on_run_dir("runs/here", state) == [gr.skip()] * 4
    assert "hydra.run.dir=runs/elsewhere" in app.on_run_dir("runs/elsewhere", state)[0]
    menu = form.index[(True, "optimizer")]  # a menu keeps the keys set before (the last check's overrides)
    command = app.on_menu(menu)("lion", ["model=tiny", "network.rank=4"], state)[len(form.fields)]
    assert command.startswith("python train.py model=tiny optimizer=lion network.rank=4")
    assert state.values[menu] == "lion" and "runs/elsewhere" in command
    refilled = app.on_menu(menu)("adamw", ["model=tiny", "optimizer=lion", "optimizer.d_coef=2"], state)
    assert "they were reset" in refilled[-1]  # adamw has no d_coef: the keys set before are dropped, with a word
    command = refilled[len(form.fields)]
    assert command.startswith("python train.py model=tiny") and "d_coef" not in command


def test_the_runs_tab_lists_only_runs_it_may_open(form, tmp_path):
    """Runs of the project folder outside the server's folders cannot be opened or resumed: they are not listed."""
    from types import SimpleNamespace

    from sdlora.ui.runs_tab import all_runs
    from sdlora.ui.security import Roots

    project, allowed = tmp_path / "project", tmp_path / "data"
    for folder in (project, allowed):
        run = folder / "outputs" / "2026-01-01" / "10-00-00"
        run.mkdir(parents=True)
        (run / "summary.json").write_text("{}", encoding="utf-8")
    assert all_runs(SimpleNamespace(roots=Roots.of([allowed], project))) == [run]
    both = all_runs(SimpleNamespace(roots=Roots.of([allowed, project], project)))
    assert set(both) == {run, project / "outputs" / "2026-01-01" / "10-00-00"}


# ---------------------------------------------------------------------------------------------- security
def test_listen_without_auth_is_refused():
    from sdlora.ui.server import main

    assert main(["--listen", "--no-browser"]) == 2
    assert main(["--listen", "0.0.0.0", "--share", "--no-browser"]) == 2


def test_auth_and_binding_rules(tmp_path):
    from sdlora.ui.security import check_binding, parse_auth

    check_binding(False, None, False)  # this machine only: no password needed
    with pytest.raises(SdloraError, match="--auth"):
        check_binding(True, None, False)
    (tmp_path / "users").write_text("# users\nann:pw1\nbob:pw2\n", encoding="utf-8")
    assert parse_auth("me:secret", str(tmp_path / "users")) == [("me", "secret"), ("ann", "pw1"), ("bob", "pw2")]
    with pytest.raises(SdloraError):
        parse_auth("no-password", None)


def test_paths_must_lie_under_the_named_folders(tmp_path):
    from sdlora.ui.security import Roots, path_problems

    roots = Roots.of([tmp_path], tmp_path)
    (tmp_path / "data").mkdir()
    values = {"data.train_dir": str(tmp_path / "data"), "data.reg_dir": "/etc", "model.pretrained": "org/model-id",
              "data.subsets": [{"dir": f"{tmp_path}/../elsewhere"}], "model._target_": "a.b.C", "network.rank": 4,
              "data.caption_extension": ".txt"}  # fmt: skip
    problems = path_problems(roots, values)
    assert set(problems) == {"data.reg_dir", "data.subsets"}
    assert not roots.allows(tmp_path / ".." / "x") and roots.allows("data")
    elsewhere = Roots.of([tmp_path / "data"], tmp_path.parent)  # the server runs outside the folders it may use
    assert path_problems(elsewhere, {"data.caption_extension": ".txt", "data.reg_dir": ".."}) == {
        "data.reg_dir": [f"data.reg_dir: '..' is outside the folders this server may use ({elsewhere.describe()})"]
    }


def test_tool_forms_come_from_the_tools_parsers():
    from sdlora.ui.tools import argv_for, tool_named, tools

    try:
        import tomllib
    except ImportError:  # Python 3.10: the toml package (a dependency of lycoris-lora) reads it the same
        import toml as tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    expected = {name for name, target in scripts.items() if target.startswith("sdlora.tools.")}
    assert {t.name for t in tools()} == expected  # every tool is a form (a new one too: no UI code)
    assert all(t.arguments for t in tools())
    merge = tool_named("sdlora-merge-lora")
    shown = {a.dest: "" for a in merge.arguments}
    shown.update(models="a.safetensors b.safetensors", ratios="0.5 0.5", save_to="out.safetensors", concat=True)
    argv, problems = argv_for(merge, [shown[a.dest] for a in merge.arguments])
    assert not problems
    assert argv == ["--models", "a.safetensors", "b.safetensors", "--ratios", "0.5", "0.5", "--save_to",
                    "out.safetensors", "--concat"]  # fmt: skip
    argv, problems = argv_for(merge, [False if a.kind == "flag" else "" for a in merge.arguments])
    assert any("--models is required" in p for p in problems)


# -------------------------------------------------------------------------------------------------------------- plan
def test_the_plan_shows_buckets_steps_and_the_estimate_of_sdlora_memory(monkeypatch):
    import types

    import sdlora.memory_run
    from sdlora.ui.plan import make_plan

    cfg = compose_config(f"data.train_dir={EXAMPLE_DATA}", "data.caption_extension=.txt", "data.resolution=64",
                         "trainer.max_steps=4", "model=tiny")  # fmt: skip
    seen = []

    def estimate_run(config, plan, family):
        seen.append((config.trainer.max_steps, type(plan).__name__, family.name))
        return types.SimpleNamespace(estimate=types.SimpleNamespace(format=lambda: "Memory estimate: 1.0 GB peak"))

    real = make_plan(cfg)
    assert real.memory.startswith("Memory estimate (accelerator peak") and "frozen weights" in real.memory
    monkeypatch.setattr(sdlora.memory_run, "estimate_run", estimate_run)
    view = make_plan(cfg)
    assert view.memory == "Memory estimate: 1.0 GB peak" and seen == [(4, "DataPlan", "tiny")]
    assert view.rows and any("64" in str(cell) for row in view.rows for cell in row)
    assert "4" in view.text
    monkeypatch.setattr(sdlora.memory_run, "estimate_run", lambda config, plan, family: None)  # an unknown architecture
    assert "not available" in make_plan(cfg).memory


def test_the_run_charts_draw_a_line_per_tag():
    from sdlora.ui.charts import chart, series

    scalars = {
        "loss/current": [(1, 0.9, 0.0), (0, 1.0, 0.0)],
        "loss/epoch": [(1, 0.95, 0.0)],
        "lr/unet": [(0, 1e-4, 0.0)],
    }
    loss = series(scalars, "loss/")
    assert loss == (("loss/current", ((1, 1.0), (2, 0.9))),)  # steps from 1, in order; not the per-epoch loss
    picture = chart("loss", loss)
    assert picture.size[0] > 100 and chart("loss", loss) is picture  # drawn once while nothing changes
    assert chart("learning rate", series({}, "lr/")) is None


def test_help_lines_make_no_markdown_italics():
    from sdlora.ui.widgets import plain

    assert plain("no modelspec.* (the ss_* minimum stays)") == "no modelspec.∗ (the ss_∗ minimum stays)"

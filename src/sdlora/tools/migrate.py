"""Turn a kohya_ss GUI config (``.json``), an sd-scripts ``.toml`` or an sd-scripts command line into an sdlora run
(beyond kohya's tools).

Every option goes through the one kohya table (:mod:`sdlora.tools.kohya_options`, which README shows): a plain
``key=value`` or a rule (:mod:`sdlora.tools.migrate_rules`, :mod:`sdlora.tools.migrate_training`) that reproduces
what the GUI passes to sd-scripts for its fields (learning rates of 0, ``epoch``, ``lr_warmup`` in percent, the noise
type, …). The result is printed as one ``python train.py …`` line, or written as ``conf/experiment/<NAME>.yaml``
(``--write-experiment``) to run as ``python train.py experiment=<NAME>``. Nothing is dropped silently: options sdlora
does not have, LoRA types it does not have yet, and the GUI's fields that do nothing here are listed by name.

    sdlora-migrate my_gui_config.json
    sdlora-migrate my_gui_config.json --write-experiment my_character
    sdlora-migrate "accelerate launch sdxl_train_network.py --network_dim 16 --optimizer_type AdamW8bit ..."
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from sdlora.errors import SdloraError
from sdlora.tools import cli

log = logging.getLogger("sdlora")

#: Rules that others depend on run first (model, network type, scheduler).
ORDER = ("family", "network_type", "conv", "optimizer", "scheduler", "warmup", "cycles", "power")
#: GUI fields that set nothing in a training run.
GUI_ONLY = {"model_list": "the GUI's model list", "num_cpu_threads_per_process": "accelerate's CPU threads",
            "additional_parameters": "read as sd-scripts options", "save_as_bool": "the GUI's save option",
            "stop_text_encoder_training_pct": "kohya_ss sets it to 0 for LoRA"}  # fmt: skip
#: Fields only LyCORIS / DyLoRA types use (listed with the type when it is not yet available, else ignored).
LYCORIS_FIELDS = ("factor", "use_cp", "decompose_both", "train_on_input", "unit", "LyCORIS_preset", "constrain",
                  "rescaled", "use_tucker", "use_scalar", "rank_dropout_scale", "bypass_mode", "dora_wd",
                  "train_norm", "algo", "preset", "block_size", "use_conv_cp", "disable_conv_cp")  # fmt: skip
REASONS = {"logging_dir": "TensorBoard files go to the run folder", "lowram": "not needed",
           "no_token_padding": "not available"}  # fmt: skip
#: sd-scripts' defaults where sdlora's differ (applied to command lines and .toml files, which omit defaults).
CLI_DEFAULTS = {"network_dim": 4, "learning_rate": 2e-6, "enable_bucket": False,
                "persistent_data_loader_workers": False}  # fmt: skip


def collect(options: dict[str, Any], kind: str, conf: Path, model: str | None = None):
    """(context, overrides) for ``options`` read from a config of ``kind`` (see the module docstring)."""
    import sdlora.tools.migrate_training  # noqa: F401  (registers its rules)
    from sdlora.tools.kohya_options import option_map
    from sdlora.tools.migrate_input import parse_command_line
    from sdlora.tools.migrate_rules import RULES, Context, Override, is_set, number

    options = dict(options)
    if is_set(options.get("additional_parameters")):
        options.update(parse_command_line(str(options["additional_parameters"])))
    if kind != "gui":
        options = {**CLI_DEFAULTS, **options}
    ctx = Context(options, kind, conf, model)
    table, plain, rules = option_map(), [], {"family", "network_type"}
    for key, value in options.items():
        target = table.get(key)
        if target is None:
            _unknown(ctx, key, value)
        elif target.startswith("@"):
            rules.add(target[1:])
        elif is_set(value):
            plain.append(Override(target, number(value)))
    overrides = []
    for name in [*[r for r in ORDER if r in rules], *sorted(rules - set(ORDER))]:
        try:
            overrides += RULES[name](ctx)
        except (ValueError, TypeError) as exc:  # a field holding what kohya would not read either ("epoch": "x")
            read = [f"{k}={v!r}" for k, v in options.items() if table.get(k) == f"@{name}" and is_set(v)]
            raise SdloraError(f"{', '.join(read) or name}: not a value sdlora-migrate can read ({exc})") from None
    if kind == "gui" and not ctx.network.startswith("lyc"):
        _lycoris_fields(ctx)
    from sdlora.tools.migrate_fit import fit

    return ctx, fit(ctx, _dedupe(overrides + plain))


def _unknown(ctx, key: str, value: Any) -> None:
    from sdlora.tools.migrate_rules import is_set

    if key in LYCORIS_FIELDS or key in ("conv_dim", "conv_alpha") or not is_set(value):
        return
    if key in GUI_ONLY:
        ctx.notes.append(f"{key}: {GUI_ONLY[key]}")
    else:
        ctx.unsupported[key] = REASONS.get(key, "")


def _lycoris_fields(ctx) -> None:
    """The GUI's LyCORIS fields: listed with the type when it is one sdlora does not have yet."""
    from sdlora.tools.migrate_rules import is_set

    defaults = {"unit": "1", "factor": "-1"}  # the GUI's own values for fields left alone
    used = [k for k in LYCORIS_FIELDS if is_set(ctx.get(k)) and str(ctx.get(k)) != defaults.get(k)]
    if ctx.not_yet and used:
        ctx.not_yet.append("its options " + ", ".join(f"{k}={ctx.get(k)}" for k in used))


def _dedupe(overrides: list) -> list:
    """The last override of each key wins (rules run before plain keys of the same name); group choices first, then
    the keys in alphabetical order."""
    seen: dict[str, Any] = {}
    for override in overrides:
        seen[override.key] = override
    return sorted(seen.values(), key=lambda o: (not o.group, o.key.removeprefix("++")))


# ---------------------------------------------------------------------------------------------------- output
_PLAIN = re.compile(r"^[\w./~:+@-]+$")


def hydra_value(value: Any) -> str:
    """A Python value in Hydra's override grammar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    plain = _PLAIN.match(text) and text.lower() not in ("true", "false", "null")
    return text if plain else '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command_line(overrides: list) -> str:
    """``python train.py <overrides>`` on one line, each override quoted for the shell where needed."""
    return " ".join(["python", "train.py", *(shlex.quote(f"{o.key}={hydra_value(o.value)}") for o in overrides)])


def experiment_yaml(overrides: list, source: str, ctx) -> str:
    """``conf/experiment/<name>.yaml`` (``# @package _global_``) with the same settings."""
    from omegaconf import OmegaConf

    groups = [{f"override /{o.key}": o.value} for o in overrides if o.group]
    values: dict[str, Any] = {}
    for o in overrides:
        if o.group:
            continue
        node = values
        *parents, leaf = o.key.removeprefix("++").split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = o.value
    body = OmegaConf.to_yaml(OmegaConf.create({"defaults": groups, **values} if groups else values))
    header = [f"# @package _global_\n# Migrated from {source} by sdlora-migrate."]
    header += [f"# Not in sdlora: {k}{' (' + v + ')' if v else ''}" for k, v in ctx.unsupported.items()]
    header += [f"# Not yet available: {text}" for text in ctx.not_yet]
    return "\n".join(header) + "\n" + body


def report(ctx) -> list[str]:
    lines = [f"not available in sdlora (left out): {k}{' — ' + v if v else ''}" for k, v in ctx.unsupported.items()]
    lines += [f"not yet available: {text}" for text in ctx.not_yet]
    lines += [f"note: {text}" for text in ctx.notes]
    return lines


def conf_folder(value: str | None) -> Path:
    """The config folder: ``--conf_dir``, ``./conf``, or the repository's ``conf/`` beside the package."""
    for candidate in [Path(value)] if value else [Path("conf"), Path(__file__).resolve().parents[3] / "conf"]:
        if (candidate / "train.yaml").is_file():
            return candidate
    raise SdloraError(f"no sdlora config folder (conf/train.yaml) at {value or './conf'}: run in the repository or "
                      "give --conf_dir")  # fmt: skip


def migrate(config: str, model: str | None = None, write_experiment: str | None = None, conf_dir: str | None = None,
            overwrite: bool = False) -> tuple[str, list[str]]:  # fmt: skip
    """(the command line or the experiment path, the report lines) for ``config``."""
    from sdlora.tools.migrate_input import read_config

    options, kind = read_config(config)
    conf = conf_folder(conf_dir)
    ctx, overrides = collect(options, kind, conf, model)
    if write_experiment is None:
        return command_line(without_inline_prompts(ctx, overrides)), report(ctx)
    if not re.match(r"^[\w-]+$", write_experiment):
        raise SdloraError(f"--write-experiment {write_experiment!r}: use letters, digits, _ and - only")
    path = conf / "experiment" / f"{write_experiment}.yaml"
    prompts = path.with_suffix(".prompts.txt") if ctx.prompt_text else None
    for target in (path, prompts):
        if target is not None and target.exists() and not overwrite:
            raise SdloraError(f"{target} exists: choose another name or pass --overwrite")
    from sdlora.tools.migrate_rules import Override
    from sdlora.utils.atomic import atomic_write_text

    written = []
    if prompts is not None:
        atomic_write_text(prompts, ctx.prompt_text.strip() + "\n")
        overrides = _dedupe([*overrides, Override("sample.prompts", str(prompts.resolve()))])
        written.append(f"wrote {prompts} (the config's sample prompts)")
    atomic_write_text(path, experiment_yaml(overrides, Path(config).name if len(config) < 200 else "a command line",
                                            ctx))  # fmt: skip
    return f"python train.py experiment={write_experiment}", [*written, f"wrote {path}", *report(ctx)]


def without_inline_prompts(ctx, overrides: list) -> list:
    """A printed command cannot carry the GUI's typed-in sample prompts: it leaves sample images out (else the run
    would stop on "sample.every_n_steps … need sample.prompts"), and the report says how to keep them."""
    from sdlora.config.save_checks import SAMPLE_TRIGGERS

    if not ctx.prompt_text:
        return overrides
    triggers = {f"sample.{key}" for key in SAMPLE_TRIGGERS}
    dropped = [o.key for o in overrides if o.key in triggers]
    ctx.unsupported["sample_prompts"] = (
        "prompt text rather than a prompt file (the GUI's text box), which a command line cannot carry"
        + (f"; sample images are left out ({', '.join(dropped)})" if dropped else "")
        + ": --write-experiment NAME saves the prompts as conf/experiment/NAME.prompts.txt and keeps them, or save "
        "them in a file and add sample.prompts=<file>"
    )
    return [o for o in overrides if o.key not in triggers]


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "Turn a kohya_ss GUI config (.json), an sd-scripts .toml or command line into an sdlora run: prints the "
        "python train.py line (or writes conf/experiment/NAME.yaml); lists options sdlora does not have.",
        "  sdlora-migrate my_gui_config.json\n"
        "  sdlora-migrate my_gui_config.json --write-experiment my_character && python train.py "
        "experiment=my_character\n"
        "  sdlora-migrate sd_scripts_config.toml --model sdxl\n"
        '  sdlora-migrate "accelerate launch train_network.py --network_dim 16 --optimizer_type AdamW8bit"\n',
    )
    p.add_argument("config", help="a .json (kohya_ss GUI), .toml (sd-scripts --config_file), a file holding a "
                   "command line, or the command line itself (quoted)")  # fmt: skip
    p.add_argument(
        "--model",
        choices=cli.PRESETS,
        default=None,
        help="the sdlora model preset (default: from sdxl / v2 / v_parameterization)",
    )
    p.add_argument("--write-experiment", dest="write_experiment", metavar="NAME", default=None,
                   help="write conf/experiment/NAME.yaml instead of printing the command")  # fmt: skip
    p.add_argument("--conf_dir", default=None, help="sdlora's config folder (default: ./conf or the repository's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing experiment file")
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> None:
        result, lines = migrate(args.config, args.model, args.write_experiment, args.conf_dir, args.overwrite)
        for line in lines:
            print(line, file=sys.stderr)
        print(result)

    return cli.run_tool(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

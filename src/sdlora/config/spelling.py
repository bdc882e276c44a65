"""Unknown keys and group options: one message that names them and what was probably meant.

A kohya user types kohya's names (``network_dim=16``, ``loss_type=huber``) or a near miss (``network.dim``,
``loss.loss_type``). Hydra answers those with "Could not override … To append to your config use +…", and the ``+``
it suggests is refused in turn (:func:`sdlora.config.resolve.typed_config`). :func:`check_command_line` runs before
Hydra (``train.py``) and answers instead, naming the option the kohya table maps the name to
(:mod:`sdlora.tools.kohya_options`, README's "kohya option → sdlora key") or the closest keys of the schema. A config
group's option is checked against ``conf/<group>/`` the same way (``optimizer=AdamW8bit`` → kohya's AdamW8bit is
``optimizer=adamw8bit``; ``precision=bf16`` → ``precision=bf16_mixed``), each value of a sweep's simple list too.

Only keys Hydra would refuse are reported: a key below an open node (``optimizer``, ``scheduler``, ``logger``: their
target's arguments), a list or a dict is left to Hydra and the checks; so are ``+``/``++``/``~`` overrides (the schema
merge reports those with the same hint), ``hydra.*``, ``group/option`` and ``key@package`` forms, a sweep function
(``choice(…)``), and a top-level name or a group's option when another config folder is searched (it may be there).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import typing
from pathlib import Path

#: Hydra's command-line flags that take the next word as their value.
VALUE_FLAGS = ("-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "-c", "--cfg", "-p",
               "--package", "--experimental-rerun")  # fmt: skip
#: Flags and overrides that add config folders, whose groups this module does not see.
MORE_CONFIG_FOLDERS = ("-cd", "--config-dir", "-cp", "--config-path", "hydra.searchpath")


def _node(annotation: typing.Any) -> typing.Any:
    """The dataclass an annotation names (``X`` or ``X | None``; not ``list[X]``), else None."""
    import types

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return annotation if isinstance(annotation, type) and dataclasses.is_dataclass(annotation) else None


@functools.lru_cache(maxsize=1)
def schema_fields() -> dict[str, bool]:
    """Every dotted key of the schema → whether keys below it are open (any non-dataclass node takes them: the
    ``Any`` nodes, lists and dicts; Hydra and the checks judge those). The dataclasses alone, not
    :func:`sdlora.config.docs.walk_schema`, which also parses the schema's source for its comments (~12 ms at every
    ``train.py`` start)."""
    from sdlora.config.schema import TrainConfig

    out: dict[str, bool] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            node = _node(hints[f.name])
            out[prefix + f.name] = node is None
            if node is not None:
                walk(node, f"{prefix}{f.name}.")

    walk(TrainConfig, "")
    return out


def unknown_part(key: str) -> str | None:
    """The first dotted prefix of ``key`` that the schema does not have (None: the key exists or is open)."""
    fields = schema_fields()
    parts = key.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix not in fields:
            return prefix
        if fields[prefix]:
            return None
    return None


def _kohya(name: str) -> str | None:
    """What the kohya table maps the kohya option ``name`` to (a key, or the row's sdlora column for a rule)."""
    from sdlora.tools.kohya_options import ROWS

    for row in ROWS:
        target = row.maps.get(name)
        if target is not None:
            return row.sdlora.replace("`", "").replace("\\|", "|") if target.startswith("@") else target
    return None


def suggestion(key: str) -> str:
    """What an unknown ``key`` probably meant, as `` — …`` ending in where to look: the same name in another node,
    the key the kohya table maps a kohya name to, or the closest keys."""
    leaf = key.rsplit(".", 1)[-1]
    keys = list(schema_fields())
    same = [k for k in keys if k.rsplit(".", 1)[-1] == leaf and k != key]
    if not same:
        for name in dict.fromkeys((leaf, key.replace(".", "_"))):
            target = _kohya(name)
            if target is not None:
                return f" — kohya's {name} is {target} here (README's kohya table lists them all)"
    close = list(dict.fromkeys([*same, *difflib.get_close_matches(key, keys, n=2, cutoff=0.75)]))[:3]
    hint = f" — did you mean {' or '.join(close)}?" if close else ""
    return f"{hint} (python train.py --help all lists every key)"


def unknown_key_message(key: str) -> str:
    parent = key.rpartition(".")[0]
    return f"unknown option {key}: {f'{parent} has no such key' if parent else 'no such key or config group'}" + (
        suggestion(key)
    )


def _group_options(conf: Path | None) -> dict[str, set[str]]:
    """Config group → its options (``<conf>/<group>/*.yaml``; ``conf`` None: ``./conf`` or the repository's)."""
    from sdlora.config.docs import conf_dir_path

    return {g.name: {f.stem for f in g.glob("*.yaml")} for g in Path(conf_dir_path(conf)).iterdir() if g.is_dir()}


def _kohya_choice(group: str, name: str) -> str | None:
    """The option a kohya name for a group's choice means (kohya's optimizer_type, the GUI's LoRA type)."""
    from sdlora.tools.kohya_optimizers import optimizer_map
    from sdlora.tools.kohya_options import NETWORK_TYPES

    return {"optimizer": optimizer_map().get(name.lower()), "network": NETWORK_TYPES.get(name)}.get(group)


def choice_suggestion(group: str, name: str, options: set[str]) -> str:
    """What an unknown ``group=name`` probably meant: a kohya name's option, the same name in lower case, an option
    it begins (``bf16`` → ``bf16_mixed``), or the closest options."""
    kohya = _kohya_choice(group, name)
    if kohya in options:
        return f" — kohya's {name} is {group}={kohya} here"
    close = [o for o in sorted(options) if o == name.lower() or o.startswith(f"{name.lower()}_")]
    close = list(dict.fromkeys([*close, *difflib.get_close_matches(name.lower(), sorted(options), n=2)]))[:3]
    hint = f" — did you mean {' or '.join(f'{group}={c}' for c in close)}?" if close else ""
    return f"{hint} (its options: {', '.join(sorted(options))})"


def command_line_overrides(argv: list[str]) -> list[tuple[str, str]]:
    """(key, value) of the plain ``key=value`` overrides of a ``train.py`` command line (see the module docstring)."""
    found, skip = [], False
    for token in argv:
        if skip or token.startswith("-"):
            skip = token in VALUE_FLAGS
            continue
        key, sep, value = token.partition("=")
        if sep and key and not key.startswith(("+", "~", "hydra.")) and not any(c in key for c in "/@"):
            found.append((key, value))
    return found


def command_line_keys(argv: list[str]) -> list[str]:
    return [key for key, _ in command_line_overrides(argv)]


def _choice_problem(group: str, value: str, options: set[str]) -> str | None:
    names = [v.strip() for v in value.split(",")]  # a sweep's simple list; functions and interpolations are Hydra's
    if not all(re.fullmatch(r"[\w./ -]+", n) for n in names):
        return None
    for name in names:
        if name not in options and name != "null":
            missing = f"unknown option {group}={name}: conf/{group}/ has no {name}.yaml"
            return missing + choice_suggestion(group, name, options)
    return None


def check_command_line(argv: list[str], conf: Path | None = None) -> list[str]:
    """A message for each unknown key, or unknown option of a config group, of ``argv`` (empty: nothing to say);
    ``conf``: the config folder the command composes from."""
    if any(t.split("=")[0] in MORE_CONFIG_FOLDERS for t in argv):  # other folders' groups and options are unseen
        return [unknown_key_message(u) for k, _ in command_line_overrides(argv) if "." in (u := unknown_part(k) or "")]
    problems, groups = [], _group_options(conf)
    for key, value in command_line_overrides(argv):
        unknown = unknown_part(key)
        if key in groups:
            problem = _choice_problem(key, value, groups[key])
            problems += [problem] if problem else []
        elif unknown is not None:
            problems.append(unknown_key_message(unknown))
    return problems


def exit_on_unknown_keys(argv: list[str], conf: Path) -> None:
    """``train.py``'s check before Hydra starts (``conf``: its config folder): each unknown key on one ``error:``
    line, exit status 1."""
    import sys

    problems = check_command_line(argv, conf)
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        raise SystemExit(1)

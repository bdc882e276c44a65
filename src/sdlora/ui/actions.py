"""What the Training tab's controls do: checks as fields change, group menus that refill the form, import and save,
Plan, Start, Stop and the run panel's refresh. Plain functions of the field values (the tests call them directly);
:mod:`sdlora.ui.training_tab` wires them to the components."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from sdlora.errors import SdloraError
from sdlora.ui import values as field_values
from sdlora.ui.compose import GENERAL, Composed
from sdlora.ui.form import EXPERIMENT, Form, command_line, experiment_text, parse_command
from sdlora.ui.launch import Launcher
from sdlora.ui.run_panel import panel
from sdlora.ui.runs import read_run
from sdlora.ui.security import Roots, path_problems
from sdlora.ui.widgets import problem_update

DEFAULT_RUN_DIR = "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}"


@dataclass
class Checked:
    """The overrides of the form, their checked composition, and every problem by field key."""

    overrides: list[str]
    composed: Composed
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.composed.config is not None and not self.problems


def _general(problems: dict[str, list[str]]) -> str:
    messages = problems.get(GENERAL, [])
    count = sum(len(v) for v in problems.values())
    if not count:
        return '<div id="checks-ok" style="color:#16a34a">✓ the validation pass of train.py finds no problem</div>'
    head = f"{count} problem(s) — each is shown beside its field"
    body = "".join(f"<li>{html.escape(m)}</li>" for m in messages)
    return f'<div style="color:#dc2626"><b>{head}</b><ul>{body}</ul></div>'


class App:
    """The server's state: the form, the folders it may use, the processes it started."""

    def __init__(self, form: Form, roots: Roots, launcher: Launcher, initial: list[str] | None = None) -> None:
        self.form, self.roots, self.launcher = form, roots, launcher
        self.initial_values = form.values_for(initial or [])

    # ------------------------------------------------------------------------------------------------ checks
    def check(self, shown: list[Any], run_dir: str) -> Checked:
        overrides, composed = self.form.check(list(shown))
        problems = {k: list(v) for k, v in composed.problems.items()}
        paths = {}
        for override in overrides:
            key, _, text = override.lstrip("+~").partition("=")
            paths[key] = field_values.parse_value(text)[0] if text else None
        paths["hydra.run.dir"] = run_dir.split("${", 1)[0] or "."
        for key, messages in path_problems(self.roots, paths).items():
            problems.setdefault(key if key in self.form.keys else GENERAL, []).extend(messages)
        return Checked(overrides, composed, problems)

    def check_outputs(self, checked: Checked, run_dir: str) -> list[Any]:
        extra = [] if run_dir.strip() == DEFAULT_RUN_DIR else [f"hydra.run.dir={run_dir.strip()}"]
        updates = [problem_update(checked.problems.get(f.key if f.kind != "group" else f"group:{f.key}"))
                   for f in self.form.fields]  # fmt: skip
        return [command_line(checked.overrides + extra), _general(checked.problems), *updates, checked.overrides]

    def on_change(self, *inputs: Any) -> list[Any]:
        *shown, run_dir = inputs
        return self.check_outputs(self.check(shown, run_dir), run_dir)

    # --------------------------------------------------------------------------------------- refill the form
    def refill(self, overrides: list[str], run_dir: str, message: str) -> list[Any]:
        try:
            shown = self.form.values_for(overrides)
        except SdloraError as exc:
            return [gr.update() for _ in self.form.fields] + self.on_change_noop() + [f"⚠ {exc}"]
        return [*shown, *self.on_change(*shown, run_dir), message]

    def on_change_noop(self) -> list[Any]:
        return [gr.update(), gr.update(), *[gr.update() for _ in self.form.fields], gr.update()]

    def on_group(self, last: list[str], *inputs: Any) -> list[Any]:
        """A group menu changed: compose the new choices with the keys the user had set, and show that."""
        *shown, run_dir = inputs
        head = self.form.group_overrides(shown)
        keys = [o for o in last or [] if not self.form.is_group_override(o)]
        try:
            self.form.values_for(head + keys)
        except SdloraError:
            return self.refill(head, run_dir, "The options set before do not fit the new choice: they were reset.")
        return self.refill(head + keys, run_dir, "")

    def on_import(self, text: str, run_dir: str) -> list[Any]:
        """A kohya_ss ``.json`` / sd-scripts ``.toml`` (through ``sdlora-migrate``) or a ``python train.py`` line."""
        text = (text or "").strip()
        try:
            if text.startswith(("python", "train.py")):
                overrides, notes = parse_command(text)
            else:
                overrides, notes = self._migrate(text)
        except SdloraError as exc:
            return [gr.update() for _ in self.form.fields] + self.on_change_noop() + [f"⚠ {exc}"]
        return self.refill(overrides, run_dir, "Imported. " + " ".join(notes))

    def _migrate(self, source: str) -> tuple[list[str], list[str]]:
        from sdlora.tools.migrate import collect, report
        from sdlora.tools.migrate_input import read_config

        if not source:
            raise SdloraError("give the path of a kohya_ss config (.json) or an sd-scripts .toml")
        if not source.startswith("--") and "accelerate" not in source:
            source = str(self.roots.check(source, "import"))
        options, kind = read_config(source)
        ctx, overrides = collect(options, kind, self.form.conf_dir)
        return [f"{o.key}={field_values.hydra_value(o.value)}" for o in overrides], report(ctx)

    def on_save(self, name: str, *inputs: Any) -> list[Any]:
        import re

        from sdlora.config.docs import _group_options
        from sdlora.utils.atomic import atomic_write_text

        *shown, run_dir = inputs
        name = (name or "").strip()
        if not re.fullmatch(r"[\w-]+", name):
            return ["⚠ name the experiment with letters, digits, _ and - only", gr.update()]
        checked = self.check(shown, run_dir)
        path = self.form.conf_dir / EXPERIMENT / f"{name}.yaml"
        try:
            self.roots.check(path, "experiment")
            overrides = [o for o in checked.overrides if not o.startswith(f"{EXPERIMENT}=")]
            atomic_write_text(path, experiment_text(self.form, overrides, "the sdlora web UI"))
        except SdloraError as exc:
            return [f"⚠ {exc}", gr.update()]
        _group_options.cache_clear()
        choices = [("(none)", "")] + [(p.stem, p.stem) for p in sorted(path.parent.glob("*.yaml"))]
        return [f"Saved `{path}`: `python train.py experiment={name}`", gr.update(choices=choices)]

    # ------------------------------------------------------------------------------------ plan, start, stop
    def on_plan(self, *inputs: Any) -> list[Any]:
        from sdlora.ui.plan import make_plan

        *shown, run_dir = inputs
        checked = self.check(shown, run_dir)
        outputs = self.check_outputs(checked, run_dir)
        if not checked.ok:
            return ["⚠ fix the problems first: nothing was planned", "", None, None, "", *outputs]
        try:
            view = make_plan(checked.composed.config)
        except SdloraError as exc:
            return [f"⚠ {exc}", "", None, None, "", *outputs]
        text = view.text + "".join(f"\n  note: {n}" for n in view.notes)
        return ["Planned: no model was loaded.", text, view.rows, view.picture, view.memory, *outputs]

    def on_start(self, *inputs: Any) -> list[Any]:
        *shown, run_dir = inputs
        checked = self.check(shown, run_dir)
        outputs = self.check_outputs(checked, run_dir)
        if not checked.ok:
            return ["⚠ fix the problems first: nothing was started", gr.update(), *outputs]
        folder = self.launcher.new_run_dir(run_dir.strip() or DEFAULT_RUN_DIR, self.roots.base)
        try:
            self.roots.check(folder, "hydra.run.dir")
        except SdloraError as exc:
            return [f"⚠ {exc}", gr.update(), *outputs]
        process = self.launcher.start(checked.overrides, folder)
        return [f"Started `{command_line(checked.overrides)}` (process {process.pid}) in `{folder}`", str(folder),
                *outputs]  # fmt: skip

    def on_stop(self, current: str) -> str:
        if not current:
            return "No run started from this page yet (stop other runs in the Runs tab)."
        try:
            return self.launcher.stop(Path(current))
        except SdloraError as exc:
            return f"⚠ {exc}"

    def on_tick(self, current: str) -> list[Any]:
        if not current:
            return panel(None).values()
        return panel(read_run(Path(current), self.launcher.alive(Path(current)))).values()

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
from sdlora.ui.shown import ShownForm
from sdlora.ui.widgets import problem_box_id, problem_html

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
        """The checks' outputs: the command, the general problems, the problems by box, the overrides."""
        extra = [] if run_dir.strip() == DEFAULT_RUN_DIR else [f"hydra.run.dir={run_dir.strip()}"]
        boxes = {}
        for f in self.form.fields:
            messages = checked.problems.get(f.key if f.kind != "group" else f"group:{f.key}")
            if messages:
                boxes[problem_box_id(f.elem_id)] = problem_html(messages)
        return [command_line(checked.overrides + extra), _general(checked.problems), boxes, checked.overrides]

    def on_change(self, *inputs: Any) -> list[Any]:
        """The checks of every field's value (``*shown, run_dir``)."""
        *shown, run_dir = inputs
        return self.check_outputs(self.check(shown, run_dir), run_dir)

    def _checked(self, state: ShownForm) -> list[Any]:
        return self.check_outputs(self.check(state.values, state.run_dir), state.run_dir)

    @staticmethod
    def _unchecked() -> list[Any]:
        """The check outputs left as they are (:meth:`check_outputs` has four)."""
        return [gr.skip()] * 4

    def on_field(self, index: int):
        """The handler of field ``index``'s change: ``(value, state) → checks`` (nothing when the state holds the
        value already: the echo of a refill)."""

        def changed(value: Any, state: ShownForm) -> list[Any]:
            with state.lock:
                return self._checked(state) if state.set_field(index, value) else self._unchecked()

        return changed

    def on_run_dir(self, run_dir: str, state: ShownForm) -> list[Any]:
        with state.lock:
            return self._checked(state) if state.set_run_dir(run_dir) else self._unchecked()

    def shown_form(self) -> ShownForm:
        """The state a new session starts from (the page's initial values)."""
        return ShownForm(self.initial_values, DEFAULT_RUN_DIR)

    # --------------------------------------------------------------------------------------- refill the form
    def refill(self, overrides: list[str], run_dir: str, message: str, state: ShownForm) -> list[Any]:
        """Every field set to what ``overrides`` compose to, with their checks (outputs: the fields, the checks,
        the message)."""
        try:
            shown = self.form.values_for(overrides)
        except SdloraError as exc:
            return [gr.skip() for _ in self.form.fields] + self._unchecked() + [f"⚠ {exc}"]
        return self._show(shown, run_dir, message, state)

    def _show(self, shown: list[Any], run_dir: str, message: str, state: ShownForm) -> list[Any]:
        """The fields that change (the others are left as they are: fewer updates for the page), the checks, the
        message; the state takes the new values."""
        with state.lock:
            updates = [gr.skip() if new == old else new for new, old in zip(shown, state.values, strict=True)]
            state.replace(shown, run_dir)
            return [*updates, *self._checked(state), message]

    def on_menu(self, index: int):
        """The handler of group menu ``index``: ``(choice, last overrides, state) → refill``. The new choices compose
        with the keys the user had set (reset, with a message, when those do not fit the new choice)."""

        def chosen(choice: str, last: list[str], state: ShownForm) -> list[Any]:
            with state.lock:
                state.set_field(index, choice)
                shown, run_dir = list(state.values), state.run_dir
            head = self.form.group_overrides(shown)
            keys = [o for o in last or [] if not self.form.is_group_override(o)]
            try:
                shown = self.form.values_for(head + keys)
            except SdloraError:
                message = "The options set before do not fit the new choice: they were reset."
                return self.refill(head, run_dir, message, state)
            return self._show(shown, run_dir, "", state)

        return chosen

    def on_import(self, text: str, run_dir: str, state: ShownForm) -> list[Any]:
        """A kohya_ss ``.json`` / sd-scripts ``.toml`` (through ``sdlora-migrate``) or a ``python train.py`` line."""
        text = (text or "").strip()
        try:
            if text.startswith(("python", "train.py")):
                overrides, notes = parse_command(text)
            else:
                overrides, notes = self._migrate(text)
        except SdloraError as exc:
            return [gr.skip() for _ in self.form.fields] + self._unchecked() + [f"⚠ {exc}"]
        return self.refill(overrides, run_dir, "Imported. " + " ".join(notes), state)

    def _migrate(self, source: str) -> tuple[list[str], list[str]]:
        from sdlora.tools.migrate import collect, report, without_inline_prompts
        from sdlora.tools.migrate_input import read_config

        if not source:
            raise SdloraError("give the path of a kohya_ss config (.json) or an sd-scripts .toml")
        if not source.startswith("--") and "accelerate" not in source:
            source = str(self.roots.check(source, "import"))
        options, kind = read_config(source)
        ctx, overrides = collect(options, kind, self.form.conf_dir)
        overrides = without_inline_prompts(ctx, overrides)  # as the printed command (typed-in GUI prompts)
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
    def _check_all(self, state: ShownForm, shown: list[Any], run_dir: str) -> Checked:
        """Plan and Start read every field; the session's state takes what the page shows."""
        with state.lock:
            state.replace(shown, run_dir)
            return self.check(shown, run_dir)

    def on_plan(self, state: ShownForm, *inputs: Any) -> list[Any]:
        from sdlora.ui.plan import make_plan

        *shown, run_dir = inputs
        checked = self._check_all(state, shown, run_dir)
        outputs = self.check_outputs(checked, run_dir)
        if not checked.ok:
            return ["⚠ fix the problems first: nothing was planned", "", None, None, "", *outputs]
        try:
            view = make_plan(checked.composed.config)
        except SdloraError as exc:
            return [f"⚠ {exc}", "", None, None, "", *outputs]
        text = view.text + "".join(f"\n  note: {n}" for n in view.notes)
        return ["Planned: no model was loaded.", text, view.rows, view.picture, view.memory, *outputs]

    def on_start(self, state: ShownForm, *inputs: Any) -> list[Any]:
        *shown, run_dir = inputs
        checked = self._check_all(state, shown, run_dir)
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

"""The Training tab: kohya_ss's Source model / Folders / Parameters (Basic, Advanced, Samples) tabs, generated from
the form (:mod:`sdlora.ui.form`), with the command it stands for, live checks beside the fields, Plan, Start and Stop,
and the panel of the run it started (:mod:`sdlora.ui.run_panel`)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from sdlora.config.layout import ADVANCED, BASIC, FOLDERS, SAMPLES, SOURCE
from sdlora.ui import actions
from sdlora.ui.form import EXPERIMENT, Form, advanced_sections
from sdlora.ui.widgets import SHOW_PROBLEMS_JS, RunPanelWidgets, field_component, problem_box

DEFAULT_RUN_DIR = actions.DEFAULT_RUN_DIR


class TrainingTab:
    """The components of the tab, aligned with ``form.fields``, and its events (handlers in :mod:`.actions`)."""

    def __init__(self, app: actions.App) -> None:
        self.app = app
        self.form: Form = app.form
        self.controls: list[Any] = [None] * len(self.form.fields)

    # ----------------------------------------------------------------------------------------------- layout
    def _field(self, i: int, values: list[Any]) -> None:
        field = self.form.fields[i]
        self.controls[i] = field_component(field, values[i])
        problem_box(field.elem_id)  # filled in the browser from the checks (widgets.PROBLEM_BOX_JS)

    def _fields(self, indices: list[int], values: list[Any]) -> None:
        heading = None
        for start in range(0, len(indices), 3):
            row = indices[start : start + 3]
            new = self.form.fields[row[0]].heading
            if new and new != heading:
                gr.Markdown(f"**{new}**")
                heading = new
            with gr.Row(equal_height=False):
                for i in row:
                    with gr.Column(min_width=240):
                        self._field(i, values)

    def _tab_indices(self, tab: str, section: str | None = None) -> list[int]:
        indices = [i for i, f in enumerate(self.form.fields) if f.tab == tab and f.key != EXPERIMENT]
        if section is not None:
            indices = [i for i in indices if self.form.fields[i].section == section]
        return sorted(indices, key=lambda i: self.form.fields[i].kind != "group")  # menus first

    def build(self) -> None:
        values = self.app.initial_values
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                self._field(self.form.index[(True, EXPERIMENT)], values)
            with gr.Column(scale=2):
                self.experiment_name = gr.Textbox(label="save as conf/experiment/<name>.yaml", elem_id="save-name")
                self.save_button = gr.Button("Save experiment", size="sm", elem_id="save-experiment")
            with gr.Column(scale=3):
                self.import_path = gr.Textbox(label="kohya_ss config (.json / .toml) or a command line",
                                              elem_id="import-path")  # fmt: skip
                self.import_button = gr.Button("Import (sdlora-migrate)", size="sm", elem_id="import-button")
        with gr.Tabs():
            with gr.Tab(SOURCE, id="tab-source"):
                self._fields(self._tab_indices(SOURCE), values)
            with gr.Tab(FOLDERS, id="tab-folders"):
                self.run_dir = gr.Textbox(value=DEFAULT_RUN_DIR, label="output folder of the run (hydra.run.dir)",
                                          info="kohya's output_dir; ${now:…} is the start time",
                                          elem_id="run-dir")  # fmt: skip
                self._fields(self._tab_indices(FOLDERS), values)
            with gr.Tab("Parameters", id="tab-parameters"), gr.Tabs():
                with gr.Tab(BASIC, id="tab-basic"):
                    self._fields(self._tab_indices(BASIC), values)
                with gr.Tab(ADVANCED, id="tab-advanced"):
                    for section in advanced_sections(self.form):
                        with gr.Accordion(section, open=False):
                            self._fields(self._tab_indices(ADVANCED, section), values)
                with gr.Tab(SAMPLES, id="tab-samples"):
                    self._fields(self._tab_indices(SAMPLES), values)
        self.command = gr.Textbox(label="the command this page runs", interactive=False, elem_id="command",
                                  buttons=["copy"])  # fmt: skip
        self.general = gr.HTML(elem_id="problems")
        self.problem_store = gr.JSON(visible=False, elem_id="checks-store")  # shown by the boxes (widgets.py)
        self.overrides = gr.State([])
        self.shown = gr.State(self.app.shown_form())
        with gr.Row():
            self.plan_button = gr.Button("Plan", elem_id="plan-button")
            self.start_button = gr.Button("Start", variant="primary", elem_id="start-button")
            self.stop_button = gr.Button("Stop", variant="stop", elem_id="stop-button")
        self.message = gr.Markdown(elem_id="message")
        with gr.Accordion("Plan", open=True, elem_id="plan-section"):
            self.plan_text = gr.Textbox(label="data plan", lines=8, interactive=False, elem_id="plan-text")
            with gr.Row():
                self.plan_table = gr.Dataframe(headers=["bucket", "aspect ratio", "images", "× repeats", "batches"],
                                               interactive=False, elem_id="bucket-table")  # fmt: skip
                self.plan_picture = gr.Image(label="bucket histogram", interactive=False, elem_id="bucket-picture")
            self.plan_memory = gr.Markdown(elem_id="memory-estimate")
        self.current_run = gr.State("")
        with gr.Accordion("Run", open=True, elem_id="run-section"):
            self.panel = RunPanelWidgets("run")
        self.timer = gr.Timer(1.5)
        self._wire()

    # ------------------------------------------------------------------------------------------------ events
    @property
    def checks(self) -> list[Any]:
        """The outputs of a check (:meth:`actions.App.check_outputs`)."""
        return [self.command, self.general, self.problem_store, self.overrides]

    @property
    def refill_outputs(self) -> list[Any]:
        """The outputs of a refill of the whole form (:meth:`actions.App.refill`)."""
        return [*self.controls, *self.checks, self.message]

    def _wire(self) -> None:
        app, form = self.app, self.form
        inputs = [*self.controls, self.run_dir]
        fast = {"queue": False, "trigger_mode": "always_last", "show_progress": "hidden"}
        refill = self.refill_outputs
        for i, (control, f) in enumerate(zip(self.controls, form.fields, strict=True)):
            if f.kind == "group":  # a menu the user picked from refills the form
                control.input(app.on_menu(i), [control, self.overrides, self.shown], refill, **fast)
            else:  # any change: typed, pasted, deleted, or set by a refill (then an echo, skipped)
                control.change(app.on_field(i), [control, self.shown], self.checks, **fast)
        self.run_dir.change(app.on_run_dir, [self.run_dir, self.shown], self.checks, **fast)
        self.problem_store.change(None, [self.problem_store], None, js=SHOW_PROBLEMS_JS)
        self.import_button.click(app.on_import, [self.import_path, self.run_dir, self.shown], refill)
        self.save_button.click(app.on_save, [self.experiment_name, *inputs],
                               [self.message, self.controls[form.index[(True, EXPERIMENT)]]])  # fmt: skip
        self.plan_button.click(app.on_plan, [self.shown, *inputs], [self.message, self.plan_text, self.plan_table,
                                                                    self.plan_picture, self.plan_memory,
                                                                    *self.checks])  # fmt: skip
        self.start_button.click(app.on_start, [self.shown, *inputs], [self.message, self.current_run, *self.checks])
        self.stop_button.click(app.on_stop, [self.current_run], [self.message])
        self.timer.tick(app.on_tick, [self.current_run], self.panel.outputs(), show_progress="hidden")

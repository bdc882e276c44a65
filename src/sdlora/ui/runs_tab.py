"""The Runs tab (beyond kohya_ss): every run under ``outputs/`` and ``multirun/`` with its status, config, final
loss / val loss, samples and files; resume a stopped run with one click (``resume=<run folder>``, in a new run
folder); stop a running one; compare the runs of a sweep (the sweep summary table and plot of
``sdlora-summarize-sweep``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from sdlora.errors import SdloraError
from sdlora.ui.actions import DEFAULT_RUN_DIR, App
from sdlora.ui.form import command_line
from sdlora.ui.run_panel import panel
from sdlora.ui.runs import find_runs, find_sweeps, overrides_of, read_run
from sdlora.ui.shown import ShownForm
from sdlora.ui.widgets import RunPanelWidgets

HEADERS = ["run folder", "status", "steps", "train loss", "val loss", "started", "LoRA"]


def _number(value: Any) -> str:
    return "" if value is None else f"{value:.5g}"


def _openable(app: App, find: Any) -> list[Path]:
    """What ``find`` returns under the project and every folder the server may use, kept to those the page may open
    (a run of the project outside those folders could be listed but neither opened nor resumed)."""
    bases = dict.fromkeys([app.roots.base, *app.roots.folders])
    return list(dict.fromkeys(p for base in bases for p in find(base) if app.roots.allows(p)))


def all_runs(app: App) -> list[Path]:
    """The runs under ``outputs/`` and ``multirun/`` that the page may open, newest first."""
    return sorted(_openable(app, find_runs), key=lambda p: (p / "summary.json").stat().st_mtime, reverse=True)


def _shown(app: App, folder: Path) -> str:
    return str(folder.relative_to(app.roots.base)) if app.roots.base in folder.parents else str(folder)


def run_rows(app: App) -> list[list[Any]]:
    rows = []
    for folder in all_runs(app):
        view = read_run(folder, app.launcher.alive(folder))
        record = view.record
        lora = Path(record["lora"]).name if record.get("lora") else ""
        rows.append([_shown(app, folder), view.status, view.step, _number(record.get("loss")),
                     _number(record.get("val_loss")), record.get("started_at", ""), lora])  # fmt: skip
    return rows


class RunsTab:
    def __init__(self, app: App, training_outputs: list[Any], training_state: Any) -> None:
        self.app = app
        self.training_outputs = training_outputs  # the Training tab's controls, to open a run's settings there
        self.training_state = training_state  # and what it shows (actions.App.refill)

    def build(self) -> None:
        with gr.Row():
            self.refresh = gr.Button("Refresh", size="sm", elem_id="runs-refresh")
        self.table = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="runs-table")
        self.selected = gr.Dropdown(label="run folder", choices=[], allow_custom_value=True, elem_id="runs-select")
        with gr.Row():
            self.resume = gr.Button("Resume", variant="primary", size="sm", elem_id="runs-resume")
            self.stop = gr.Button("Stop", variant="stop", size="sm", elem_id="runs-stop")
            self.open = gr.Button("Open its settings in the Training tab", size="sm", elem_id="runs-open")
        self.message = gr.Markdown(elem_id="runs-message")
        self.command = gr.Textbox(label="the command of this run", interactive=False, elem_id="runs-command")
        self.panel = RunPanelWidgets("runs")
        with gr.Accordion("Compare the runs of a sweep", open=False):
            self.sweep = gr.Dropdown(label="sweep folder", choices=[], elem_id="sweep-select")
            self.sweep_table = gr.Markdown(elem_id="sweep-table")
            self.sweep_plot = gr.Image(label="sweep", interactive=False, elem_id="sweep-plot")
        self.timer = gr.Timer(3.0)
        self._wire()

    def _wire(self) -> None:
        self.refresh.click(self.on_refresh, [], [self.table, self.selected, self.sweep])
        details = [self.command, *self.panel.outputs()]
        self.selected.change(self.on_select, [self.selected], details)
        self.timer.tick(self.on_select, [self.selected], details, show_progress="hidden")
        self.resume.click(self.on_resume, [self.selected], [self.message, self.selected])
        self.stop.click(self.on_stop, [self.selected], [self.message])
        self.open.click(self.on_open, [self.selected, self.training_state], self.training_outputs)
        self.sweep.change(self.on_sweep, [self.sweep], [self.sweep_table, self.sweep_plot])

    def _folder(self, selected: str) -> Path:
        if not selected:
            raise SdloraError("choose a run folder first")
        return self.app.roots.check(selected, "run folder")

    def on_refresh(self) -> list[Any]:
        rows = run_rows(self.app)
        sweeps = [_shown(self.app, p) for p in _openable(self.app, find_sweeps)]
        return [rows, gr.update(choices=[r[0] for r in rows]), gr.update(choices=sweeps)]

    def on_select(self, selected: str) -> list[Any]:
        if not selected:
            return ["", *panel(None).values()]
        try:
            folder = self._folder(selected)
        except SdloraError as exc:
            return [str(exc), *panel(None).values()]
        view = read_run(folder, self.app.launcher.alive(folder))
        return [command_line(overrides_of(folder)), *panel(view).values()]

    def on_resume(self, selected: str) -> list[Any]:
        """``python train.py <the run's overrides> resume=<run folder>`` in a new run folder beside it."""
        try:
            folder = self._folder(selected)
            if self.app.launcher.alive(folder):
                raise SdloraError(f"{folder} is still running: stop it first")
            new = self.app.launcher.new_run_dir(f"{folder}-resumed", self.app.roots.base)  # beside it
            overrides = [*overrides_of(folder), f"resume={folder}"]
            process = self.app.launcher.start(overrides, new)
        except SdloraError as exc:
            return [f"⚠ {exc}", gr.update()]
        relative = _shown(self.app, new)
        message = f"Resumed `{folder}` as `{command_line(overrides)}` (process {process.pid}) in `{new}`"
        return [message, gr.update(choices=[relative], value=relative)]

    def on_stop(self, selected: str) -> str:
        try:
            return self.app.launcher.stop(self._folder(selected))
        except SdloraError as exc:
            return f"⚠ {exc}"

    def on_open(self, selected: str, state: ShownForm) -> list[Any]:
        try:
            overrides = overrides_of(self._folder(selected))
        except SdloraError as exc:
            return self.app.refill([], DEFAULT_RUN_DIR, f"⚠ {exc}", state)
        return self.app.refill(overrides, DEFAULT_RUN_DIR, f"Opened the settings of {selected}.", state)

    def on_sweep(self, selected: str) -> list[Any]:
        from sdlora.tools.sweep_summary import summarize, to_markdown

        if not selected:
            return ["", None]
        try:
            folder = self._folder(selected)
            summary = summarize(folder)
        except SdloraError as exc:
            return [f"⚠ {exc}", None]
        picture = None
        try:
            from sdlora.tools.sweep_plot import plot_sweep

            picture = str(plot_sweep(summary, folder / "sweep.png"))
        except ImportError:  # matplotlib
            pass
        return [to_markdown(summary), picture]

"""The page: kohya_ss's layout — Training (Source model, Folders, Parameters), Tools (LoRA tools), Dataset
Preparation — plus Runs, built with Gradio (the UI library kohya_ss users know, README "The web UI")."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from sdlora import __version__
from sdlora.ui.actions import DEFAULT_RUN_DIR, App
from sdlora.ui.form import Form
from sdlora.ui.launch import Launcher
from sdlora.ui.runs_tab import RunsTab
from sdlora.ui.security import Roots
from sdlora.ui.tools_tab import DATASET, LORA, ToolsTab
from sdlora.ui.training_tab import TrainingTab
from sdlora.ui.widgets import PROBLEM_CSS

CSS = ".sdlora-progress{font-family:monospace} .gradio-container{max-width:1400px !important} " + PROBLEM_CSS


def make_app(project: Path, roots: Roots, conf_dir: str | Path | None = None, initial: list[str] | None = None) -> App:
    """The server's state for the project folder (``train.py``, ``conf/``) and the folders it may use."""
    return App(Form(conf_dir or project / "conf"), roots, Launcher(project), initial)


def build_page(app: App) -> gr.Blocks:
    with gr.Blocks(title="sdlora") as page:
        gr.Markdown(f"## sdlora {__version__} — LoRA training for SD 1.5, 2.x and SDXL  \n"
                    f"Folders this page may use: {', '.join(f'`{f}`' for f in app.roots.folders)}")  # fmt: skip
        with gr.Tabs():
            with gr.Tab("Training", id="training"):
                training = TrainingTab(app)
                training.build()
            with gr.Tab("Runs", id="runs"):
                RunsTab(app, training.refill_outputs, training.shown).build()
            with gr.Tab("Tools", id="tools"):
                ToolsTab(app, LORA).build()
            with gr.Tab("Dataset Preparation", id="dataset"):
                ToolsTab(app, DATASET).build()
        page.load(lambda: app.on_change(*app.initial_values, DEFAULT_RUN_DIR), [], training.checks)
    return page

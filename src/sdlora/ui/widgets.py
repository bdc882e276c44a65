"""Gradio components for the generated fields (one per :class:`~sdlora.ui.form.FormField` or tool argument) and
the run panel. Each control has an ``elem_id`` the browser tests use: ``group-<group>``, ``field-<key with dots as
dashes>`` and ``problem-…`` for the message beside it."""

from __future__ import annotations

from typing import Any

import gradio as gr

from sdlora.ui.form import FormField


def _choices(values: tuple[str, ...]) -> list[tuple[str, str]]:
    return [("(null)" if v == "" else v, v) for v in values]


def plain(text: str) -> str:
    """``text`` for a control's help line. Gradio reads it as Markdown without escapes, so two asterisks
    (``modelspec.* (the ss_* minimum)``) made italics; "∗" (U+2217) looks the same and is not markup."""
    return text.replace("*", "\u2217")


def field_component(field: FormField, value: Any):
    """The control of a form field."""
    common = {"label": field.key, "info": plain(field.info), "elem_id": field.elem_id}
    if field.kind == "group":
        choices = [("(none)" if v == "" else v, v) for v in field.choices]
        return gr.Dropdown(choices=choices, value=value, **common)
    if field.kind == "bool":
        return gr.Checkbox(value=bool(value), **common)
    if field.kind == "choice":
        return gr.Dropdown(choices=_choices(field.choices), value=value, **common)
    if field.kind == "node":
        return gr.Textbox(value=value, lines=4, max_lines=20, **{**common, "label": f"{field.key} (arguments, YAML)"})
    return gr.Textbox(value=value, lines=1, max_lines=4, **common)


PROBLEM_CLASS = "sdlora-problem"
MESSAGE_CLASS = "sdlora-message"

# The problems of the last check are one output (a hidden JSON of message HTML by problem-box id); the browser keeps
# them in ``window.sdloraProblems`` and each box shows its own — when it mounts (a tab's fields mount when the tab is
# first opened) and whenever the checks change. One output instead of one per field: Gradio's page handled ~200
# outputs a change in about 0.6 s.
PROBLEM_BOX_JS = """
const show = () => {
  if (!element.isConnected && element.dataset.shown) { window.removeEventListener("sdlora-problems", show); return; }
  element.dataset.shown = "1";
  element.innerHTML = (window.sdloraProblems || {})[props.box] || "";
};
window.addEventListener("sdlora-problems", show);
show();
"""
SHOW_PROBLEMS_JS = """(problems) => {
  window.sdloraProblems = problems || {};
  window.dispatchEvent(new Event("sdlora-problems"));
}"""
# a box without a message takes no room (as a hidden component would)
PROBLEM_CSS = f".{PROBLEM_CLASS}:not(:has(.{MESSAGE_CLASS})) {{display: none !important}}"


def problem_box_id(elem_id: str) -> str:
    return elem_id.replace("field-", "problem-").replace("group-", "problem-")


def problem_box(elem_id: str):
    """The message under a field (empty, and taking no room, while the field has no problem)."""
    box = problem_box_id(elem_id)
    return gr.HTML("", elem_id=box, elem_classes=[PROBLEM_CLASS], js_on_load=PROBLEM_BOX_JS, box=box)


def problem_html(messages: list[str]) -> str:
    """What a problem box shows for ``messages`` (escaped)."""
    import html

    body = "<br>".join(html.escape(m) for m in messages)
    return f'<div class="{MESSAGE_CLASS}" style="color:#dc2626;font-size:0.9em">⚠ {body}</div>'


class RunPanelWidgets:
    """The components of a run's panel (values from :func:`sdlora.ui.run_panel.panel`)."""

    def __init__(self, prefix: str) -> None:
        self.status = gr.Markdown(elem_id=f"{prefix}-status")
        self.progress = gr.HTML(elem_id=f"{prefix}-progress")
        with gr.Row():
            self.loss = gr.Image(label="loss", interactive=False, elem_id=f"{prefix}-loss")
            self.lr = gr.Image(label="learning rate", interactive=False, elem_id=f"{prefix}-lr")
        self.samples = gr.Gallery(label="sample images", columns=6, height=220, elem_id=f"{prefix}-samples")
        self.files = gr.Markdown(elem_id=f"{prefix}-files")
        self.log = gr.Textbox(label="log (tail)", lines=10, max_lines=10, elem_id=f"{prefix}-log", autoscroll=True)
        self.tensorboard = gr.Markdown(elem_id=f"{prefix}-tensorboard")

    def outputs(self) -> list:
        return [self.status, self.progress, self.loss, self.lr, self.samples, self.files, self.log, self.tensorboard]

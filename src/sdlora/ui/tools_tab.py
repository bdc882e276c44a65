"""The Tools tab: kohya_ss's LoRA tools and Dataset Preparation, one form per sdlora tool generated from its
argument parser (:mod:`sdlora.ui.tools`), run as its own process with its output shown as it comes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from sdlora.errors import SdloraError
from sdlora.ui.actions import App
from sdlora.ui.security import looks_like_path
from sdlora.ui.tools import DATASET, LORA, Argument, Tool, argv_for, shown_default, tools
from sdlora.ui.widgets import plain


def argument_component(tool: Tool, argument: Argument):
    elem_id = f"tool-{tool.slug}-{argument.dest}"
    label = f"{argument.label}{' (required)' if argument.required else ''}"
    value = shown_default(argument)
    if argument.kind == "flag":
        return gr.Checkbox(value=value, label=label, info=plain(argument.help), elem_id=elem_id)
    if argument.kind == "choice":
        choices = ([] if argument.required else [("(default)", "")]) + [(c, c) for c in argument.choices]
        unset = None if argument.required else ""  # a required choice starts with nothing chosen
        return gr.Dropdown(choices=choices, value=value if value in argument.choices else unset, label=label,
                           info=plain(argument.help), elem_id=elem_id)  # fmt: skip
    info = argument.help + (" (several values, separated by spaces)" if argument.kind == "list" else "")
    return gr.Textbox(value=value, label=label, info=plain(info), elem_id=elem_id)


class ToolsTab:
    def __init__(self, app: App, category: str) -> None:
        self.app = app
        self.category = category

    def build(self) -> None:
        with gr.Tabs():
            for tool in tools():
                if tool.category != self.category:
                    continue
                with gr.Tab(tool.name, id=f"tool-{tool.slug}"):
                    gr.Markdown(tool.description or tool.name)
                    controls = [argument_component(tool, a) for a in tool.arguments]
                    button = gr.Button(f"Run {tool.name}", variant="primary", elem_id=f"tool-{tool.slug}-run")
                    output = gr.Textbox(label="output", lines=10, max_lines=30, interactive=False,
                                        elem_id=f"tool-{tool.slug}-output", autoscroll=True)  # fmt: skip
                    button.click(self.runner(tool), controls, [output])

    def runner(self, tool: Tool):
        def run(*shown: Any) -> Iterator[str]:
            yield from self.run_tool(tool, list(shown))

        return run

    def run_tool(self, tool: Tool, shown: list[Any]) -> Iterator[str]:
        """Check the arguments (required ones, paths under the server's folders), run the tool, stream its output."""
        argv, problems = argv_for(tool, shown)
        for argument, value in zip(tool.arguments, shown, strict=True):
            for word in str(value or "").split() if argument.kind == "list" else [str(value or "")]:
                if argument.kind != "flag" and looks_like_path(word) and not self.app.roots.allows(word):
                    problems.append(f"{argument.label}={word!r} is outside the folders this server may use "
                                    f"({self.app.roots.describe()})")  # fmt: skip
        if problems:
            yield "nothing was run:\n" + "\n".join(f"- {p}" for p in problems)
            return
        try:
            process = self.app.launcher.tool(tool.module, argv)
        except SdloraError as exc:
            yield str(exc)
            return
        text = f"$ {tool.name} {' '.join(argv)}\n"
        yield text
        for line in process.stdout:
            text += line
            yield text
        code = process.wait()
        yield text + ("\ndone" if code == 0 else f"\nfailed (exit code {code})")


__all__ = ["DATASET", "LORA", "ToolsTab"]

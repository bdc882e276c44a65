"""The web UI in a real browser: ``sdlora-ui`` started as its own process on a free port, and headless Chromium
(Debian's ``chromium`` package, or ``SDLORA_CHROMIUM``) driven by Playwright — never Playwright's own browser
download. Screenshots go to ``tests/artifacts/ui/`` (git-ignored)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers.config import ROOT

ARTIFACTS = ROOT / "tests" / "artifacts" / "ui"


def chromium_path() -> str | None:
    """The system's Chromium (``SDLORA_CHROMIUM`` first), or None."""
    candidates = [os.environ.get("SDLORA_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]
    for candidate in filter(None, candidates):
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(roots: list[Path], log: Path, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """``sdlora-ui`` on a free port of 127.0.0.1 with ``roots`` as its folders; (process, URL) once it answers."""
    port = free_port()
    argv = [sys.executable, "-m", "sdlora.ui.server", "--port", str(port), "--no-browser", "--project", str(ROOT)]
    for root in roots:
        argv += ["--root", str(root)]
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"sdlora-ui exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError(f"sdlora-ui did not answer within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def text_field(page, elem_id: str):
    """The text input of a Gradio Textbox."""
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def type_into(page, elem_id: str, value: str, attempts: int = 3) -> None:
    """Set a Gradio Textbox as a user pastes it (one change event) and check that the field holds ``value``.

    A tab opened for the first time mounts its fields with their stored values; text filled in while that happens can
    be replaced (CI once saw ``prompts.txt`` arrive as ``t``). Pasting again, as a user would, is then the right move.
    """
    from playwright.sync_api import expect

    field = text_field(page, elem_id)
    for attempt in range(attempts):
        field.fill(value)
        try:
            expect(field).to_have_value(value, timeout=5_000)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


def choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in a Gradio Dropdown."""
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def progress(page, prefix: str = "run") -> dict[str, str]:
    """The run panel's progress bar attributes (step, total, status)."""
    return page.evaluate(
        f"() => {{ const e = document.querySelector('#{prefix}-progress .sdlora-progress'); "
        "return e ? Object.assign({}, e.dataset) : {}; }"
    )

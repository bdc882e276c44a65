"""The web UI in a real browser (headless Chromium driven by Playwright): set up a run of the tiny model on the
example data, plan it, train it and watch it finish; a bad value is shown beside its field and nothing starts; Stop
on a long run leaves a training state, the Runs tab says "interrupted", and Resume continues it.

Skipped, with the reason, when no Chromium is installed (``.ci/run`` installs Debian's ``chromium``) or the ui
extra is missing. Screenshots of each stage: ``tests/artifacts/ui/*.png``.
"""

from __future__ import annotations

import re
import shutil
import time

import pytest

from tests.helpers.browser import choose, chromium_path, progress, screenshot, start_server, text_field, type_into
from tests.helpers.config import ROOT

pytest.importorskip("gradio", reason="the web UI needs the ui extra (pip install -e '.[ui]')")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (dev extra)")
CHROMIUM = chromium_path()
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install chromium, or set SDLORA_CHROMIUM)"),
    pytest.mark.xdist_group("browser"),
]
expect = playwright.expect if CHROMIUM else None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder the server may use, with a copy of the example data and prompts."""
    folder = tmp_path_factory.mktemp("ui")
    shutil.copytree(ROOT / "examples" / "data", folder / "data")
    shutil.copy(ROOT / "examples" / "prompts.txt", folder / "prompts.txt")
    return folder


@pytest.fixture(scope="module")
def server(workspace):
    process, url = start_server([workspace], workspace / "server.log")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(server)
    page.wait_for_selector("#command textarea")
    yield page
    page.close()


def _choose_tiny(page) -> None:
    """Pick model=tiny and wait until the form is refilled for it: fields typed before the refill would be emptied."""
    choose(page, "group-model", "tiny")
    expect(page.locator("#command textarea")).to_have_value("python train.py model=tiny", timeout=60_000)


def _tiny_run(page, workspace, *, max_steps: int, state: bool = False) -> None:
    """Fill the form as a kohya_ss user would: Source model, Folders, Parameters, Samples."""
    _choose_tiny(page)
    page.get_by_role("tab", name="Folders").click()
    type_into(page, "field-data-train_dir", str(workspace / "data"))
    type_into(page, "run-dir", str(workspace / "outputs" / "${now:%H-%M-%S}"))
    page.get_by_role("tab", name="Parameters").click()
    page.get_by_role("tab", name="Basic").click()
    type_into(page, "field-data-caption_extension", ".txt")
    type_into(page, "field-data-resolution", "64")
    type_into(page, "field-trainer-max_steps", str(max_steps))
    if state:
        page.get_by_role("tab", name="Advanced").click()
        page.get_by_text("save", exact=True).click()  # the accordion of the save.* keys
        page.locator("#field-save-state input").check()
    page.get_by_role("tab", name="Samples").click()
    type_into(page, "field-sample-prompts", str(workspace / "prompts.txt"))
    type_into(page, "field-sample-every_n_steps", "2")
    command = page.locator("#command textarea")
    for part in ("python train.py model=tiny", f"data.train_dir={workspace / 'data'}", "data.resolution=64",
                 "data.caption_extension=.txt", f"trainer.max_steps={max_steps} ", "sample.every_n_steps=2",
                 f"sample.prompts={workspace / 'prompts.txt'}", *(["save.state=true"] if state else [])):  # fmt: skip
        expect(command).to_have_value(re.compile(re.escape(part)), timeout=60_000)
    try:
        expect(page.locator("#checks-ok")).to_be_visible(timeout=60_000)
    except AssertionError:
        shown = page.evaluate("() => [...document.querySelectorAll('[id^=problem-]')].map(e => e.innerText)")
        raise AssertionError(f"the checks found problems: {[s for s in shown if s.strip()]}") from None


def _wait_progress(page, prefix: str, done, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = progress(page, prefix)
        if done(state):
            return state
        time.sleep(0.5)
    raise AssertionError(f"the {prefix} panel never got there: {progress(page, prefix)}")


def test_plan_and_train_the_tiny_model_to_the_end(page, workspace):
    _tiny_run(page, workspace, max_steps=4)
    screenshot(page, "1-form")
    page.locator("#plan-button").click()
    expect(page.locator("#bucket-table")).to_contain_text("64×64", timeout=120_000)
    assert "training: 4 steps" in page.locator("#plan-text textarea").input_value()
    expect(page.locator("#bucket-picture img")).to_be_visible()
    screenshot(page, "2-plan")
    page.locator("#start-button").click()
    expect(page.locator("#message")).to_contain_text("Started", timeout=60_000)
    state = _wait_progress(page, "run", lambda s: s.get("status") in ("completed", "failed"))
    assert state == {"step": "4", "total": "4", "status": "completed"}, page.locator("#run-log textarea").input_value()
    expect(page.locator("#run-files")).to_contain_text("last.safetensors", timeout=30_000)
    expect(page.locator("#run-samples img").first).to_be_visible(timeout=30_000)
    expect(page.locator("#run-loss img")).to_be_visible(timeout=30_000)  # the loss and learning-rate charts
    expect(page.locator("#run-lr img")).to_be_visible(timeout=30_000)
    screenshot(page, "3-trained")
    run = next((workspace / "outputs").iterdir())
    assert (run / "last.safetensors").is_file() and list((run / "sample").glob("*.png"))


def test_a_bad_value_is_shown_beside_its_field_and_nothing_starts(page, workspace):
    _choose_tiny(page)
    page.get_by_role("tab", name="Folders").click()
    type_into(page, "field-data-train_dir", str(workspace / "no such folder"))
    type_into(page, "run-dir", str(workspace / "bad" / "run"))
    page.get_by_role("tab", name="Parameters").click()
    page.get_by_role("tab", name="Basic").click()
    type_into(page, "field-network-rank", "-1")
    problem = page.locator("#problem-network-rank")
    expect(problem).to_contain_text("network.rank must be ≥ 1", timeout=60_000)
    rank = text_field(page, "field-network-rank")  # a deleted character is a change too (no key press of its own)
    rank.fill("321")
    rank.press("End")
    rank.press("Backspace")
    expect(page.locator("#command textarea")).to_have_value(re.compile(r"network\.rank=32( |$)"), timeout=60_000)
    expect(problem).to_be_hidden()
    type_into(page, "field-network-rank", "-1")
    expect(problem).to_contain_text("network.rank must be ≥ 1", timeout=60_000)
    page.get_by_role("tab", name="Folders").click()
    expect(page.locator("#problem-data-train_dir")).to_contain_text("does not exist", timeout=60_000)
    page.locator("#start-button").click()
    expect(page.locator("#message")).to_contain_text("nothing was started", timeout=60_000)
    screenshot(page, "4-bad-values")
    assert not (workspace / "bad").exists()


def test_stop_leaves_a_state_the_runs_tab_says_interrupted_and_resume_continues(page, workspace):
    _tiny_run(page, workspace, max_steps=5000, state=True)
    page.locator("#start-button").click()
    expect(page.locator("#message")).to_contain_text("Started", timeout=60_000)
    _wait_progress(page, "run", lambda s: int(s.get("step") or 0) >= 2 and s.get("status") == "running")
    screenshot(page, "5-running")
    page.locator("#stop-button").click()
    expect(page.locator("#message")).to_contain_text("Sent Ctrl-C", timeout=30_000)
    _wait_progress(page, "run", lambda s: s.get("status") == "interrupted", timeout=120)
    runs = sorted((workspace / "outputs").iterdir(), key=lambda p: p.stat().st_mtime)
    stopped = runs[-1]
    assert list(stopped.glob("*-state")), "Stop must leave a training state"
    page.get_by_role("tab", name="Runs", exact=True).click()
    page.locator("#runs-refresh").click()
    expect(page.locator("#runs-table")).to_contain_text("interrupted", timeout=30_000)
    choose(page, "runs-select", str(stopped))
    expect(page.locator("#runs-status")).to_contain_text("interrupted", timeout=30_000)
    screenshot(page, "6-runs-interrupted")
    page.locator("#runs-resume").click()
    expect(page.locator("#runs-message")).to_contain_text("Resumed", timeout=60_000)
    _wait_progress(page, "runs", lambda s: s.get("status") == "running" and int(s.get("step") or 0) > 2)
    screenshot(page, "7-resumed")
    page.locator("#runs-stop").click()
    _wait_progress(page, "runs", lambda s: s.get("status") == "interrupted", timeout=120)
    resumed = sorted((workspace / "outputs").iterdir(), key=lambda p: p.stat().st_mtime)[-1]
    assert resumed.name == f"{stopped.name}-resumed" and list(resumed.glob("*-state"))


def test_the_tools_tab_merges_two_loras_and_refuses_a_path_outside_the_folders(page, workspace):
    from tests.helpers.lora_files import random_lora

    first = random_lora(workspace / "loras" / "a.safetensors", "tiny", rank=4, seed=1)
    second = random_lora(workspace / "loras" / "b.safetensors", "tiny", rank=4, seed=2)
    merged = workspace / "loras" / "merged.safetensors"
    page.get_by_role("tab", name="Tools", exact=True).click()
    page.get_by_role("tab", name="sdlora-merge-lora", exact=True).click()
    type_into(page, "tool-merge-lora-models", f"{first} /etc/passwd")
    type_into(page, "tool-merge-lora-save_to", str(merged))
    page.locator("#tool-merge-lora-run").click()
    output = page.locator("#tool-merge-lora-output textarea")
    expect(output).to_have_value(re.compile("nothing was run.*'/etc/passwd' is outside", re.S), timeout=60_000)
    type_into(page, "tool-merge-lora-models", f"{first} {second}")
    type_into(page, "tool-merge-lora-ratios", "0.5 0.5")
    page.locator("#tool-merge-lora-concat input").check()
    page.locator("#tool-merge-lora-run").click()
    expect(output).to_have_value(re.compile(r"done$"), timeout=120_000)
    screenshot(page, "8-tools-merge")
    assert merged.is_file()


def test_the_latency_benchmark_measures_field_changes_and_refills(page):
    """``benchmarks/ui_latency.py`` runs on this page (its numbers are not asserted: they live in the benchmark)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ui_latency", ROOT / "benchmarks" / "ui_latency.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    results = benchmark.measure(page, repeat=2)
    assert {name: len(times) for name, times in results.items()} == {
        "field change → command": 2,
        "menu → refilled form": 2,
    }
    assert "optimizer=adamw8bit" in page.locator("#command textarea").input_value()  # the last menu choice

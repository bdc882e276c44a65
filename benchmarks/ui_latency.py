"""Web UI latency: how long the Training tab takes from a changed field to the updated command, and from a group menu
choice to the refilled form, in headless Chromium driven by Playwright (the browser tests' set-up).

    python benchmarks/ui_latency.py [--repeat 8]

Starts ``sdlora-ui`` on a free port with a temporary folder as its root. A field change: ``trainer.max_steps`` pasted
(one change event), timed until the command shows the new value. A refill: the ``optimizer`` menu switched between
two options, timed until the command shows the choice. Prints the median and the range; nothing is asserted (the
numbers before and after the per-field events: docs/performance.md, *Web UI*).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timed(action, done) -> float:
    start = time.perf_counter()
    action()
    done()
    return time.perf_counter() - start


def field_changes(page, repeat: int) -> list[float]:
    """Seconds from pasting a value into ``trainer.max_steps`` to the command showing it."""
    from playwright.sync_api import expect

    from tests.helpers.browser import text_field

    page.get_by_role("tab", name="Parameters").click()
    page.get_by_role("tab", name="Basic").click()
    field, command = text_field(page, "field-trainer-max_steps"), page.locator("#command textarea")
    times = []
    for i in range(repeat):
        value = str(101 + i)
        pattern = re.compile(rf"trainer\.max_steps={value}( |$)")
        times.append(_timed(lambda v=value: field.fill(v), lambda p=pattern: expect(command).to_have_value(p)))
    return times


def menu_refills(page, repeat: int) -> list[float]:
    """Seconds from choosing an optimizer in its menu to the refilled form's command."""
    from playwright.sync_api import expect

    from tests.helpers.browser import choose

    command = page.locator("#command textarea")
    times = []
    for i in range(repeat):
        option = ("lion", "adamw8bit")[i % 2]
        pattern = re.compile(rf"optimizer={option}( |$)")
        times.append(_timed(lambda o=option: choose(page, "group-optimizer", o),
                            lambda p=pattern: expect(command).to_have_value(p)))  # fmt: skip
    return times


def measure(page, repeat: int) -> dict[str, list[float]]:
    """Both measurements on an open page of the server (``page`` already shows the Training tab)."""
    return {"field change → command": field_changes(page, repeat), "menu → refilled form": menu_refills(page, repeat)}


def report(results: dict[str, list[float]]) -> None:
    print(f"{'event':<26} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, times in results.items():
        print(f"{name:<26} {statistics.median(times):>9.2f} {min(times):>7.2f} {max(times):>7.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=8, help="events of each kind (median reported)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("needs playwright (the dev extra) and gradio (the ui extra)")
        return 0
    from tests.helpers.browser import chromium_path, start_server

    chromium = chromium_path()
    if chromium is None:
        print("no Chromium found (apt-get install chromium, or set SDLORA_CHROMIUM): nothing measured")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_server([Path(tmp)], Path(tmp) / "server.log")
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                page.goto(url)
                page.wait_for_selector("#command textarea")
                report(measure(page, args.repeat))
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

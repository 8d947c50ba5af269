"""The app in a real browser: Playwright drives Debian's Chromium (never `playwright install`;
run.sh's test branch installs the browser with apt). A person's path: type a prompt, click
Generate, see garments; then the heatmaps of an example garment; then an example garment on the
partial tab with Generate pressed before the example has arrived.

Screenshots go to the test's tmp dir, or to $ARMANI_SCREENSHOTS when set (to look at them).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
]
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-sync"]
TIMEOUT_MS = 240_000  # the CPU may be shared with a training run


@pytest.fixture(scope="module")
def app(tiny_run):
    from demo.launcher import running_app

    with running_app(["--checkpoint", str(tiny_run), "--baselines-dir", "none", "--search-size", "32"]) as running:
        yield running


@pytest.fixture(scope="module")
def page(app):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app.url, wait_until="domcontentloaded")
        yield page
        browser.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("ARMANI_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _shown_images(page, selector: str) -> int:
    """How many images inside ``selector`` have really loaded (decoded, non-zero size)."""
    return page.eval_on_selector_all(f"{selector} img", "els => els.filter(e => e.complete && e.naturalWidth > 0).length")


def test_type_prompt_generate_and_see_garments(page, shots):
    assert "ARMANI" in page.locator("#title").inner_text()
    page.get_by_role("tab", name="About").first.wait_for()  # the title can be up before the tab bar is
    tabs = [t.strip() for t in page.get_by_role("tab").all_inner_texts()]
    assert tabs[:8] == ["Text → garment", "Text + sketch → garment", "Text + partial → garment", "MaskCLIP heatmaps",
                        "Compare", "Part editing", "Search", "About"]
    prompt = page.locator("#t2i-prompt textarea")
    prompt.fill("Yellow dotted skirt with a wide waistband and a belt.")
    page.locator("#t2i-generate").click()
    page.locator("#t2i-status").get_by_text("4 images in").wait_for()
    # Every image shown has loaded (not only 4 of them: the last preview's may still be swapping out).
    page.wait_for_function("() => { const im = [...document.querySelectorAll('#t2i-gallery img')];"
                           " return im.length >= 4 && im.every(e => e.complete && e.naturalWidth > 0); }")
    page.screenshot(path=str(shots / "text_to_garment.png"), full_page=True)
    assert _shown_images(page, "#t2i-gallery") >= 4
    assert "yellow dotted skirt" in page.locator("#t2i-status").inner_text().lower()
    if not os.environ.get("GRADIO_TEMP_DIR"):
        # served from the app's own folder, not the machine-wide /tmp/gradio that earlier app
        # processes left entries in (there the same garment came back as a broken image)
        srcs = page.eval_on_selector_all("#t2i-gallery img", "els => els.map(e => e.src)")
        assert srcs and all("armani-gradio-" in src for src in srcs), srcs


def test_heatmaps_of_an_example_garment(page, shots):
    page.get_by_role("tab", name="MaskCLIP heatmaps").click()
    panel = page.locator("#heatmaps-tab")
    panel.locator("[data-testid='dataset-cell-3-0']").click()  # the example shirt (row 3) and its caption
    page.locator("#heatmaps-image img").first.wait_for()
    panel.get_by_role("button", name="Show heatmaps").click()
    page.wait_for_function("() => [...document.querySelectorAll('#heatmaps-gallery img')]"
                           ".filter(e => e.complete && e.naturalWidth > 0).length >= 3")
    page.screenshot(path=str(shots / "heatmaps.png"), full_page=True)
    assert _shown_images(page, "#heatmaps-gallery") >= 3


def test_an_example_pressed_then_generate_gives_the_examples_garment(page, shots):
    """Loading an example is a server round trip. Here it is held back until Generate has been
    pressed (the click a person makes right after picking an example): what the page ends up
    showing must be made from the example's garment and caption, not the inputs from before."""
    from demo.examples import example_garments

    caption = example_garments()[1][1]
    page.get_by_role("tab", name="Text + partial → garment").click()
    panel = page.locator("#partial-tab")
    held = []

    def hold(route):
        held.append(route)

    page.route("**/run/predict**", hold)  # Gradio's unqueued calls; loading an example is one
    panel.locator("button.gallery-item").nth(1).click()  # one picture per example: shown as a gallery
    while not held:
        page.wait_for_timeout(50)
    panel.get_by_role("button", name="Generate").click()
    page.wait_for_timeout(500)  # that run is queued on the old inputs (no garment, no text)
    for route in held:
        route.continue_()
    page.unroute("**/run/predict**", hold)
    status = page.locator("#partial-status")
    status.get_by_text("4 images in").wait_for()
    page.wait_for_function("() => document.querySelector('#partial-status').innerText.toLowerCase()"
                           f".includes({caption.split()[0].lower()!r} + ' ' + {caption.split()[1].lower()!r})")
    page.screenshot(path=str(shots / "partial_example.png"), full_page=True)
    assert _shown_images(page, "#partial-gallery") >= 4
    assert "random 25% crop" in status.inner_text()

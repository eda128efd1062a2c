"""The dashboard in a real browser: `streamlit run app.py` driven by Playwright on Debian's Chromium.

Visits every page, uploads an X-ray on Predict and reads the prediction, and
saves a full-page screenshot of each page under test-artifacts/ (git-ignored).
Chromium is found with shutil.which; the test skips only when it is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

import common  # benchmarks/common.py: the benchmarks' way to start a dashboard for Chromium, shared
from cxr_core.config import PROJECT_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """A streamlit server over a store holding the tiny finished run; yields its base URL."""
    store, _ = tiny_run
    cache = tmp_path_factory.mktemp("browser_cache")
    log = tmp_path_factory.mktemp("browser_log") / "streamlit.log"
    port = common.free_port()
    env = dict(os.environ, CXR_RUNS_DIR=str(store.root), CXR_CACHE_DIR=str(cache))
    env.pop("CXR_DATA_DIR", None)  # the default: the synthetic demo set, generated into the private cache
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        common.wait_healthy(url, process, timeout=90, log=log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=common.BROWSER_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(120_000)
        tab = context.new_page()
        yield tab
        browser.close()


def _settle(tab) -> None:
    """Wait until the script run is over: no 'running' status, spinner or skeleton is left."""
    tab.wait_for_load_state("networkidle")
    tab.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " && !document.querySelector('[data-testid=\"stSkeleton\"]')"
        " && !document.querySelector('[data-testid=\"stSpinner\"]')")
    tab.wait_for_timeout(1500)  # plotly draws after the run ends


def _screenshot(tab, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it first."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = tab.evaluate("document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
    tab.set_viewport_size({"width": 1400, "height": min(int(height) + 150, 12000)})
    tab.wait_for_timeout(1000)
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    tab.set_viewport_size({"width": 1400, "height": 1000})


def _visit(tab, url: str, heading: str, name: str) -> str:
    """Open a page, wait for it to finish, check it shows no exception; returns its text (tables included)."""
    started = time.time()
    tab.goto(url)
    tab.get_by_role("heading", name=heading, exact=True).first.wait_for()
    _settle(tab)
    print(f"{name}: {time.time() - started:.1f}s to a settled page")
    _screenshot(tab, name)
    assert tab.locator("[data-testid='stException']").count() == 0, f"{name}: an exception is shown"
    return tab.locator("[data-testid='stMain']").text_content()


def test_every_page_and_a_prediction(server, page, demo_dir):
    # A deep link first: after a restart the first visit may land on any page, and it must
    # still get the app's navigation and sidebar.
    text = _visit(page, f"{server}/dataset", "Dataset explorer", "dataset")
    assert "Leakage check passed" in text
    # The gallery: the images are fetched after the run ends, so wait for the twelfth.
    page.locator("[data-testid='stImage']").nth(11).wait_for()
    assert page.locator("[data-testid='stSidebarNav']").get_by_text("Predict").count() == 1
    assert "Data set" in page.locator("[data-testid='stSidebar']").inner_text()

    text = _visit(page, server, "Chest X-ray pneumonia study", "home")
    assert "Not for clinical use" in text and "SYNTHETIC" in text

    text = _visit(page, f"{server}/train", "Train", "train")
    assert "regularized_cnn" in text and "done" in text  # the tiny run in the runs table

    text = _visit(page, f"{server}/compare", "Compare runs", "compare")
    assert "Published results" in text and "missed pneumonia" in text

    _visit(page, f"{server}/predict", "Predict", "predict_empty")
    xray = sorted((demo_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    started = time.time()
    page.locator("input[type='file']").set_input_files(str(xray))
    page.get_by_text("P(pneumonia)").first.wait_for()
    _settle(page)
    print(f"predict: {time.time() - started:.1f}s from upload to a prediction")
    _screenshot(page, "predict")
    main = page.locator("[data-testid='stMain']")
    assert main.locator("[data-testid='stMetricValue']").first.inner_text() in ("NORMAL", "PNEUMONIA")
    assert "Grad-CAM: evidence for" in main.inner_text()
    assert page.locator("[data-testid='stException']").count() == 0


def test_the_lesson_walks_forwards_and_a_step_link_opens_that_step(server, page):
    text = _visit(page, f"{server}/lesson?step=1", "1. Census: who is in the data set", "lesson_1")
    assert "Accuracy of always answering PNEUMONIA" in text and "Discuss." in text
    page.get_by_role("button", name="Next").first.click()
    page.get_by_role("heading", name="2. The validation trap, and patients").wait_for()
    # The measurement decodes the demo set first: wait for its result, not only for the heading.
    page.get_by_text("Patient-level split: accuracy").wait_for()
    _settle(page)
    assert "step=2" in page.url
    # A projector's link: the same step on every laptop that opens it.
    text = _visit(page, f"{server}/lesson?step=4", "4. Sensitivity against specificity", "lesson_4")
    # The server shows the default demo set, on which no run was trained: the step offers to train one.
    assert "How many false alarms would you accept" in text and "step=4" in page.url
    assert page.get_by_role("button", name="Train the regularized CNN (the study's best recipe)").count() == 1
    page.get_by_role("button", name="Previous").first.click()
    page.get_by_role("heading", name="3. Baseline against regularized").wait_for()
    _settle(page)
    assert "step=3" in page.url
    assert page.locator("[data-testid='stException']").count() == 0

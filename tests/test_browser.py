"""The dashboard in a real browser: `streamlit run app.py` driven by Playwright on Debian's Chromium.

Visits every page, uploads an X-ray on Predict and reads the prediction, and
saves a full-page screenshot of each page under test-artifacts/ (git-ignored).
Chromium is found with shutil.which; the test skips only when it is absent.

A second server runs with a teacher key (classroom mode): a student's browser clicks every control
that would change the run store and changes nothing; the teacher's, once the key is entered, trains.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import dashboard  # benchmarks/dashboard.py: the one starter of the dashboard and Chromium
import pytest
from dashboard import CHROMIUM, IDLE, serve

from cxr_core import jobs, lesson
from cxr_core.config import PROJECT_ROOT
from cxr_core.registry import default_settings
from cxr_core.store import RunState, RunStore

ARTIFACTS = PROJECT_ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """A streamlit server over a store holding the tiny finished run; yields its base URL."""
    store, _ = tiny_run
    cache = tmp_path_factory.mktemp("browser_cache")
    env = dict(os.environ, CXR_RUNS_DIR=str(store.root), CXR_CACHE_DIR=str(cache))
    env.pop("CXR_DATA_DIR", None)  # the default: the synthetic demo set, generated into the private cache
    env.pop("CXR_TEACHER_KEY", None)  # one person on a laptop: nothing locked
    with serve(env=env, log=tmp_path_factory.mktemp("browser_log") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def page(server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(120_000)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def browser():
    with dashboard.browser() as chromium:
        yield chromium


def _settle(tab) -> None:
    """Wait until the script run is over (dashboard.IDLE: no script running, spinner or skeleton, images
    loaded) and no 'running' status widget is left."""
    tab.wait_for_load_state("networkidle")
    tab.wait_for_timeout(300)  # a click's rerun starts after the click returns
    tab.wait_for_function(IDLE)
    tab.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
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
    assert page.get_by_role("button", name="Train regularized_cnn (our recipe)").count() == 1
    page.get_by_role("button", name="Previous").first.click()
    page.get_by_role("heading", name="3. Baseline against regularized").wait_for()
    _settle(page)
    assert "step=3" in page.url
    assert page.locator("[data-testid='stException']").count() == 0


# ---------------------------------------------------------------- classroom mode: the class looks, the teacher acts

TEACHER_KEY = "lungs-and-ribs-7"
# The labels of every control that changes the run store (Train page, Compare, the Lesson's queue buttons).
STATE_CHANGING = re.compile(r"^(Train|Stop|Remove|Delete|Yes, delete it|Score)\b")


@pytest.fixture(scope="module")
def classroom(tiny_run, demo_dir, tmp_path_factory):
    """A server with a teacher key over a private store: the tiny finished run (on the demo set it shows),
    a run 'training' (a stand-in process), one queued and one cancelled. This process holds the worker
    lock throughout, so no worker ever starts and trains. Yields (url, store, stand-in process)."""
    source, run_id = tiny_run
    root = tmp_path_factory.mktemp("classroom_runs")
    shutil.copytree(source.run_path(run_id), root / run_id)
    store = RunStore(root)
    elsewhere = str(tmp_path_factory.mktemp("another_folder"))
    running = store.new_run(default_settings("regularized_cnn").to_dict(), elsewhere, state=RunState.RUNNING)
    store.new_run(default_settings("baseline_cnn").to_dict(), elsewhere, state=RunState.QUEUED)
    store.new_run(default_settings("baseline_cnn").to_dict(), elsewhere, state=RunState.CANCELLED)
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)", "cxr_core"], start_new_session=True)
    store.set_status(running.run_id, pid=job.pid, started=time.time(), epoch=0, batch=0, steps_per_epoch=4)
    env = dict(os.environ, CXR_RUNS_DIR=str(root), CXR_CACHE_DIR=str(tmp_path_factory.mktemp("classroom_cache")),
               CXR_DATA_DIR=str(demo_dir), CXR_TEACHER_KEY=TEACHER_KEY, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("CXR_MAX_QUEUED", None)
    try:
        with jobs.worker_lock(store), serve(env=env, log=tmp_path_factory.mktemp("classroom_log") / "streamlit.log") as url:
            yield url, store, job
    finally:
        job.kill()
        job.wait()


def _listing(store: RunStore) -> tuple:
    """What a student could change: every run's state and every scoring request."""
    return (sorted((r.run_id, r.state) for r in store.list()),
            sorted((r["id"], r["state"]) for r in jobs.evaluation_requests(store)))


def _new_tab(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(120_000)
    return context, context.new_page()


def _open(tab, url: str, heading: str) -> None:
    tab.goto(url)
    tab.get_by_role("heading", name=heading).first.wait_for()
    _settle(tab)
    assert tab.locator("[data-testid='stException']").count() == 0, f"{url}: an exception is shown"


def _key_field(tab):
    return tab.locator("[data-testid='stSidebar'] input[type='password'][aria-label='Teacher key']")


def _click_every_state_changing_button(tab) -> list[str]:
    """Click (forced past the disabled state) every button in the main area whose label changes the
    run store; returns their labels. Each must be disabled and explained by a lock note."""
    found = []
    for button in tab.locator("[data-testid='stMain'] button[data-testid^='stBaseButton']").all():
        texts = button.locator("[data-testid='stMarkdownContainer']").all_inner_texts()  # none: an icon button
        label = texts[0].strip() if texts else ""
        if STATE_CHANGING.match(label):
            assert button.is_disabled(), f"{label!r} is open to a student"
            button.click(force=True)
            found.append(label)
    _settle(tab)
    if found:
        assert "Enter the teacher key in the sidebar to" in tab.locator("[data-testid='stMain']").inner_text()
    return found


def test_a_students_browser_cannot_change_the_run_store(classroom, browser):
    url, store, job = classroom
    before = _listing(store)
    context, tab = _new_tab(browser)
    try:
        _open(tab, f"{url}/train", "Train")
        assert _key_field(tab).count() == 1
        clicked = _click_every_state_changing_button(tab)
        _screenshot(tab, "train_student")
        assert {"Train", "Train the study's lineup", "Stop", "Remove", "Delete..."} <= set(clicked), clicked

        _open(tab, f"{url}/compare", "Compare runs")
        tab.get_by_text("Score these runs on another labelled folder").click()
        assert _click_every_state_changing_button(tab) == ["Score"]
        for step in (3, 7, 9):  # training the missing models, scoring with occlusions, the transfer models
            _open(tab, f"{url}/lesson?step={step}", f"{step}. {lesson.STEPS[step - 1].title}")
            clicked = _click_every_state_changing_button(tab)
            assert clicked or step != 3, "no queue button on lesson step 3 (baseline_cnn is not trained)"
    finally:
        context.close()
    assert _listing(store) == before
    assert job.poll() is None  # the 'training' stand-in was not stopped


def test_a_teacher_enters_the_key_and_train_queues_a_run(classroom, browser, demo_dir):
    url, store, _ = classroom
    before = {r.run_id for r in store.list()}
    context, tab = _new_tab(browser)
    try:
        _open(tab, f"{url}/train", "Train")
        train = tab.locator("[data-testid='stMain'] button[data-testid^='stBaseButton']").filter(
            has=tab.locator("[data-testid='stMarkdownContainer']", has_text=re.compile(r"^Train$")))
        assert train.first.is_disabled()
        field = _key_field(tab)
        field.fill(TEACHER_KEY)
        field.press("Enter")
        tab.get_by_text("may train, stop, queue and delete").wait_for()
        _settle(tab)
        assert TEACHER_KEY not in tab.content() and TEACHER_KEY not in tab.url
        assert train.first.is_enabled()
        train.first.click()
        tab.get_by_text("queued behind").wait_for()
        _settle(tab)
        _screenshot(tab, "train_teacher")
    finally:
        context.close()
    (new,) = [r for r in store.list() if r.run_id not in before]
    assert new.state == RunState.QUEUED and new.model == "regularized_cnn"
    assert new.settings["data_dir"] == str(demo_dir.resolve())

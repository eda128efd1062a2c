"""The class reads the X-rays, in a real browser: five students read a 10-image set in their own browser
contexts, the class view shows five points, `reads SET --json` agrees with every click, a second
submission from a session that already submitted is refused, and the answers survive a server restart.

The store holds no trained run: the class view then says there is no model to compare with (the model
side is covered under AppTest in test_read_page.py), which keeps this test to reading and storing.
Streamlit and Chromium start through benchmarks/dashboard.py; the test skips when Chromium is absent.
"""

from __future__ import annotations

import json
import os

import dashboard  # benchmarks/dashboard.py: the one starter of the dashboard and Chromium
import pytest
from dashboard import CHROMIUM, serve
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from cxr_core import reads
from cxr_core.config import CLASSES
from cxr_core.store import RunStore

CONFIDENCE = "How sure are you?"
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    with dashboard.browser() as chromium:
        yield chromium


def settle(tab) -> None:
    tab.wait_for_load_state("networkidle")
    tab.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
                          " && !document.querySelector('[data-testid=\"stSkeleton\"]')")


def read_set(tab, url: str, reading_set: dict, name: str, calls: list[str], raise_confidence=frozenset()) -> str:
    """Open the set, give a nickname and answer each image; returns the page's text at the end.
    On the images in `raise_confidence` the slider is moved from 3 to 5 before the click."""
    set_id = reading_set["id"]
    tab.goto(f"{url}/read?set={set_id}")
    nickname = tab.get_by_label("Nickname (optional, shown beside your point on the class view)")
    nickname.fill(name)
    nickname.press("Enter")
    settle(tab)
    tab.get_by_role("button", name="Start reading").click()
    tab.locator("[data-testid='stImage'] img").first.wait_for()
    names = [image["path"].rsplit("/", 1)[-1] for image in reading_set["images"]]
    assert not any(name in tab.content() for name in names)  # served as pixels, never by its file name
    answer_all(tab, calls, raise_confidence)
    return tab.locator("[data-testid='stMain']").inner_text()


def raise_to(tab, value: str, attempts: int = 10) -> None:
    """Move the confidence slider up one step at a time until it shows `value`. Each change reruns the
    page, which re-renders the slider: a key pressed during that rerun can be lost, so each step is
    pressed, then waited for, and pressed again if it did not take."""
    selector = f"input[type='range'][aria-label^='{CONFIDENCE}']"
    current = f"() => document.querySelector(\"{selector}\").value"
    for _ in range(attempts):
        if tab.evaluate(current) == value:
            settle(tab)
            return
        before = tab.evaluate(current)
        slider = tab.locator(selector)
        slider.focus()
        slider.press("ArrowRight")
        try:
            tab.wait_for_function(f"() => ({current})() !== '{before}'", timeout=10_000)
        except PlaywrightTimeout:  # the press was lost in a rerun: press again
            pass
        settle(tab)
    raise AssertionError(f"the confidence slider did not reach {value}: {tab.evaluate(current)}")


def answer_all(tab, calls: list[str], raise_confidence=frozenset()) -> None:
    for i, call in enumerate(calls):
        tab.get_by_text(f"Image {i + 1} of {len(calls)}").wait_for()
        if i in raise_confidence:
            raise_to(tab, "5")
        tab.get_by_role("button", name=call, exact=True).click()
    tab.get_by_role("heading", name="Your reading").wait_for()
    settle(tab)
    assert tab.locator("[data-testid='stException']").count() == 0


def metric(tab, label: str) -> str:
    shown = tab.locator("[data-testid='stMetric']").filter(has=tab.get_by_text(label, exact=True))
    return shown.locator("[data-testid='stMetricValue']").inner_text().strip()


def reader_points(tab) -> int:
    """How many points the class view's 'readers' trace draws."""
    return tab.evaluate("() => { for (const plot of document.querySelectorAll('.js-plotly-plot'))"
                        " for (const trace of plot.data || []) if (trace.name === 'readers') return trace.x.length;"
                        " return 0; }")


def class_view(browser, url: str, set_id: str, readers: int) -> str:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(120_000)
    tab = context.new_page()
    try:
        tab.goto(f"{url}/read?set={set_id}&view=class")
        tab.locator("[data-testid='stMetricValue']", has_text=str(readers)).first.wait_for()
        tab.wait_for_function(f"() => [...document.querySelectorAll('.js-plotly-plot')].some(p => (p.data || [])"
                              f".some(t => t.name === 'readers' && t.x.length === {readers}))")
        assert reader_points(tab) == readers
        return tab.locator("[data-testid='stMain']").inner_text()
    finally:
        context.close()


def test_five_students_read_a_set_and_the_room_sees_them(browser, demo_dir, tmp_path, cli):
    store = RunStore(tmp_path / "runs")
    reading_set = reads.create_set(demo_dir, store, images=10, seed=7)
    set_id, truth = reading_set["id"], [CLASSES[i["truth"]] for i in reading_set["images"]]
    wrong = [CLASSES[1 - CLASSES.index(t)] for t in truth]
    students = {"all pneumonia": ["PNEUMONIA"] * 10, "perfect": truth, "<b>contrarian</b>": wrong,
                "all normal": ["NORMAL"] * 10, "half": truth[:5] + wrong[5:]}
    env = dict(os.environ, CXR_RUNS_DIR=str(store.root), CXR_CACHE_DIR=str(tmp_path / "cache"),
               CXR_DATA_DIR=str(demo_dir), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("CXR_TEACHER_KEY", None)
    log = tmp_path / "streamlit.log"
    contexts = []
    try:
        with serve(env=env, log=log) as url:
            for n, (name, calls) in enumerate(students.items()):
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                context.set_default_timeout(120_000)
                contexts.append(context)
                tab = context.new_page()
                text = read_set(tab, url, reading_set, name, calls, {0, 3} if n == 1 else frozenset())
                assert "Your answers are in" in text
                if name == "all pneumonia":
                    assert metric(tab, "Sensitivity (pneumonia found)") == "1.00"
                    assert metric(tab, "Specificity (healthy cleared)") == "0.00"

            # A sixth submission, from a session that already submitted: refused in one line.
            first = contexts[0].pages[0]
            first.get_by_role("button", name="Read this set again (practice: only your first submission counts)").click()
            answer_all(first, ["NORMAL"] * 10)
            refusal = first.locator("[data-testid='stAlertContentError']").inner_text()
            assert "already submitted" in refusal and "\n" not in refusal.strip()
            text = class_view(browser, url, set_id, readers=5)
            assert "No finished run has stored predictions on these images" in text
    finally:
        for context in contexts:
            context.close()

    printed = json.loads(cli("reads", set_id, "--json", "--runs", store.root).stdout)
    assert {r["name"]: [a["answer"] for a in r["answers"]] for r in printed["readers"]} == students
    by_name = {r["name"]: r for r in printed["readers"]}
    assert (by_name["all pneumonia"]["sensitivity"], by_name["all pneumonia"]["specificity"]) == (1.0, 0.0)
    assert [a["confidence"] for a in by_name["perfect"]["answers"]] == [5, 3, 3, 5, 3, 3, 3, 3, 3, 3]
    assert all(a["truth"] == t for a, t in zip(by_name["perfect"]["answers"], truth))

    # The server restarts (a new process over the same store): the answers are all still there.
    with serve(env=env, log=log) as url:
        class_view(browser, url, set_id, readers=5)
    assert len(json.loads(cli("reads", set_id, "--json", "--runs", store.root).stdout)["readers"]) == 5

"""The Read page under AppTest: a student reads a set and sees the numbers `reads SET --json` gives, a
second submission from the same session is refused, the class view shows the room, the teacher's
controls are locked for students, and the Lesson shows the teacher whether the class is ready."""

from __future__ import annotations

import json
import shutil

import pytest
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

from cxr_core import reader_metrics, reads
from cxr_core.config import CLASSES, PROJECT_ROOT
from cxr_core.store import RunStore

APP = PROJECT_ROOT / "app.py"
READ, LESSON = "pages/6_read.py", "pages/5_lesson.py"
streamlit_config.set_option("client.showErrorDetails", "full")


def open_page(page: str, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def button(at: AppTest, label: str):
    (found,) = [b for b in at.button if b.label == label]
    return found


@pytest.fixture
def classroom(tiny_run, demo_dir, tmp_path, monkeypatch):
    """A store with the tiny run and a 6-image set drawn from the demo set's test/ folder."""
    source, run_id = tiny_run
    store = RunStore(tmp_path / "runs")
    shutil.copytree(source.run_path(run_id), store.root / run_id)
    monkeypatch.setenv("CXR_RUNS_DIR", str(store.root))
    monkeypatch.setenv("CXR_DATA_DIR", str(demo_dir))
    return store, reads.create_set(demo_dir, store, images=6, seed=7)


def test_a_student_reads_the_set_and_sees_what_the_cli_prints(classroom, cli):
    store, reading_set = classroom
    at = open_page(READ, {"set": reading_set["id"]})
    at.text_input(key=f"_nickname_{reading_set['id']}").input("<i>Ada</i>")
    button(at, "Start reading").click().run()
    truth = [image["truth"] for image in reading_set["images"]]
    calls = [CLASSES[1 - t] if i in (0, 3) else CLASSES[t] for i, t in enumerate(truth)]  # images 1 and 4 missed
    for i, call in enumerate(calls):
        assert f"Image {i + 1} of 6" in at.get("progress")[0].proto.text
        assert not any(image["path"].split("/")[-1] in str(at) for image in reading_set["images"])  # no file name
        at.slider(key=f"_confidence_{reading_set['id']}_{i}").set_value(i % 5 + 1)
        button(at, call).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Your answers are in" in at.success[0].value
    printed = json.loads(cli("reads", reading_set["id"], "--json", "--runs", store.root).stdout)
    (reader,) = printed["readers"]
    assert reader["name"] == "<i>Ada</i>" and [a["answer"] for a in reader["answers"]] == calls
    assert [a["confidence"] for a in reader["answers"]] == [1, 2, 3, 4, 5, 1]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Sensitivity (pneumonia found)"] == f"{reader['sensitivity']:.2f}"
    assert shown["Specificity (healthy cleared)"] == f"{reader['specificity']:.2f}"
    assert shown["AUC of your confidences"] == f"{reader['auc']:.2f}"

    assert [h.value for h in at.subheader if h.value.startswith("The ")] == ["The 2 images you missed"]
    at.button(key="read_heatmap_0").click().run()  # Grad-CAM in the predictor process
    assert not at.exception, [e.value for e in at.exception]
    assert any(c.startswith("Grad-CAM: evidence for") for image in at.image for c in image.captions)

    button(at, "Read this set again (practice: only your first submission counts)").click().run()
    for call in calls:
        button(at, call).click().run()
    assert "already submitted" in at.error[0].value and at.error[0].value.count("\n") == 0
    assert len(reads.readers(reading_set, store)) == 1


def test_the_class_view_shows_every_reader_the_vote_and_the_model(classroom):
    store, reading_set = classroom
    for session, call in (("a", "PNEUMONIA"), ("b", "NORMAL"), ("c", "PNEUMONIA")):
        reads.submit(reading_set["id"], store, session, "", [{"answer": call, "confidence": 3}] * 6)
    at = open_page(READ, {"set": reading_set["id"], "view": "class"})
    result = reader_metrics.report(reading_set, store)
    assert {m.label: m.value for m in at.metric}["Readers"] == "3"
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    traces = {trace["name"]: trace for trace in figure["data"]}
    assert len(traces["readers"]["x"]) == 3 and "majority vote" in traces
    assert traces["model (regularized_cnn)"]["x"] == pytest.approx(result["model"]["roc"]["fpr"])
    assert [m.value.removeprefix("- ") for m in at.markdown if m.value.startswith("- ")] == result["findings"]


def test_students_cannot_draw_close_or_delete_sets(classroom, monkeypatch):
    _, reading_set = classroom
    monkeypatch.setenv("CXR_TEACHER_KEY", "a-key")
    at = open_page(READ, {"set": reading_set["id"]})
    assert not [b for b in at.button if b.label in ("Draw a new set", "Close this set", "Yes, delete it")]
    assert any("draw, close or delete reading sets" in c.value for c in at.caption)
    assert [b.label for b in at.button] == ["Start reading"]  # reading needs no key


def test_without_a_set_the_page_says_how_to_draw_one(demo_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CXR_DATA_DIR", str(demo_dir))
    at = open_page(READ)
    assert "reads new --images 20 --seed 7" in at.info[0].value
    button(at, "Draw a new set").click().run()
    assert not at.exception and len(reads.list_sets(RunStore(tmp_path / "runs"))) == 1
    assert button(at, "Start reading")


def test_the_lessons_first_screen_tells_the_teacher_what_is_ready(classroom):
    at = open_page(LESSON, {"step": "1"})
    (expander,) = [e for e in at.expander if e.label.startswith("Is the class ready?")]
    table = expander.dataframe[0].value
    states = table.set_index("step")["state"]
    assert states["4"] == "ready" and states["3"] == "missing"  # the tiny run, and no run of the study's recipe
    assert states["read"] == "ready"  # the classroom fixture's set


def test_the_read_page_and_its_class_view_keep_tensorflow_out_of_the_server(classroom):
    import subprocess
    import sys

    store, reading_set = classroom
    reads.submit(reading_set["id"], store, "a", "", [{"answer": "NORMAL", "confidence": 3}] * 6)
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
for view in ("read", "class"):
    at = AppTest.from_file({str(APP)!r}, default_timeout=90).run()
    at.query_params.update(set={reading_set['id']!r}, view=view)
    at.switch_page({READ!r}).run()
    assert not at.exception, [e.value for e in at.exception]
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "the server imported TensorFlow"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=APP.parent)
    assert done.returncode == 0, done.stderr[-2000:]

"""Classroom mode under AppTest: every control that changes shared state in three states.

    nobody   no teacher key configured: everything works as before (one person is the teacher)
    student  CXR_TEACHER_KEY set, not entered: the control is disabled with a one-line reason,
             and even a forged click (AppTest clicks a disabled button) changes nothing
    teacher  the key entered in the sidebar's "Teacher key" field: the control works

The key is typed on the Home page's sidebar and carries over to the page under test, as it does in
a browser. Each test gets its own run store; no test trains (workers are recorded, not started).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest
from streamlit import config as streamlit_config
from streamlit.runtime.secrets import Secrets
from streamlit.testing.v1 import AppTest

from cxr_core import jobs
from cxr_core.config import PROJECT_ROOT, UserError
from cxr_core.registry import STUDY_MODELS as MODEL_NAMES
from cxr_core.registry import default_settings
from cxr_core.store import RunState, RunStore
from ui import teacher

APP = str(PROJECT_ROOT / "app.py")
TRAIN, COMPARE, LESSON = "pages/2_train.py", "pages/3_compare.py", "pages/5_lesson.py"
TIMEOUT = 90
KEY = "correct horse 42"
STATES = ("nobody", "student", "teacher")

streamlit_config.set_option("client.showErrorDetails", "full")


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("CXR_MAX_QUEUED", raising=False)
    return RunStore(tmp_path / "runs")


@pytest.fixture
def demo_data(demo_dir, monkeypatch):
    monkeypatch.setenv("CXR_DATA_DIR", str(demo_dir))
    return demo_dir


@pytest.fixture
def no_worker(monkeypatch):
    started = []
    monkeypatch.setattr(jobs, "spawn_worker", lambda runs: started.append(runs.root))
    return started


@pytest.fixture
def finished(tiny_run, store):
    """A private copy of the session's tiny finished run (on the demo set) in this test's store."""
    source, run_id = tiny_run
    shutil.copytree(source.run_path(run_id), store.root / run_id)
    return run_id


def configure(who: str, monkeypatch) -> None:
    if who == "nobody":
        monkeypatch.delenv("CXR_TEACHER_KEY", raising=False)
    else:
        monkeypatch.setenv("CXR_TEACHER_KEY", KEY)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, "\n".join(f"{e.value}\n{''.join(e.stack_trace)}" for e in at.exception)


def enter_key(at: AppTest, typed: str) -> AppTest:
    (field,) = [t for t in at.sidebar.text_input if t.label == "Teacher key"]
    field.input(typed).run()
    assert_clean(at)
    return at


def open_as(who: str, monkeypatch, page: str | None = None, secrets: dict | None = None, step: int | None = None):
    configure(who, monkeypatch)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    # Always given, so a developer's own ~/.streamlit/secrets.toml never decides a test.
    at.secrets.update(secrets or {"unrelated": "x"})
    at.run()
    assert_clean(at)
    if who == "teacher":
        enter_key(at, KEY)
    if step is not None:
        at.query_params["step"] = str(step)
    if page:
        at.switch_page(page).run()
        assert_clean(at)
    return at


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r} among {[b.label for b in at.button]}"
    return matches[0]


def press(at: AppTest, label: str) -> AppTest:
    """Click a button; a disabled one gets a forged click, what a script on the server's websocket could
    send (AppTest refuses to): Streamlit drops a disabled widget's value server-side, and the pages
    ask may_act() again before acting, so nothing may change."""
    target = button(at, label)
    if target.disabled:
        target._value = True
    else:
        target.click()
    at.run()
    assert_clean(at)
    return at


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def expect_lock(at: AppTest, who: str, label: str, reason: str) -> None:
    """The control's state as `who` should see it; a student also sees the one-line reason."""
    assert button(at, label).disabled == (who == "student")
    note = f":material/lock: Enter the teacher key in the sidebar to {reason}."
    assert (note in captions(at)) == (who == "student"), captions(at)


def rendered(block) -> str:
    """Every element's protobuf under a block (the sidebar, the main area): what goes to the browser."""
    return "\n".join([str(getattr(block, "proto", "")), *(rendered(c) for c in getattr(block, "children", {}).values())])


# ---------------------------------------------------------------- the key itself


def test_without_a_key_there_is_no_field_and_nothing_is_locked(store, demo_data, monkeypatch):
    at = open_as("nobody", monkeypatch)
    assert not at.sidebar.text_input and not any("eacher" in e.value for e in at.sidebar.success)


def test_a_wrong_key_is_refused_and_the_right_one_unlocks(store, demo_data, monkeypatch):
    at = open_as("student", monkeypatch)
    enter_key(at, "correct horse 41")
    assert [e.value for e in at.sidebar.error] == [
        "Wrong teacher key: nothing was unlocked. Type it again exactly as it was set."]
    assert at.sidebar.text_input[0].value == ""  # the typed text does not stay in the field
    at.switch_page(TRAIN).run()
    assert button(at, "Train").disabled

    at = open_as("student", monkeypatch)
    enter_key(at, KEY)
    assert not at.sidebar.text_input and not at.sidebar.error
    assert any("may train, stop, queue and delete" in s.value for s in at.sidebar.success)
    at.switch_page(TRAIN).run()
    assert not button(at, "Train").disabled


def test_the_teacher_can_lock_the_browser_again(store, demo_data, monkeypatch):
    at = open_as("teacher", monkeypatch)
    button(at, "Lock this browser").click().run()
    assert [t.label for t in at.sidebar.text_input] == ["Teacher key"]
    at.switch_page(TRAIN).run()
    assert button(at, "Train").disabled


def test_the_key_never_reaches_the_page(store, demo_data, monkeypatch):
    wrong = KEY[:-1] + "X"
    at = open_as("student", monkeypatch)
    enter_key(at, wrong)
    enter_key(at, KEY)
    for page in (None, TRAIN, LESSON):
        if page:
            at.switch_page(page).run()
            assert_clean(at)
        sent = rendered(at.main) + rendered(at.sidebar)
        assert KEY not in sent and wrong not in sent
        assert KEY not in str(dict(at.query_params))
        assert all(KEY not in str(t.value) for t in at.text_input)
    assert [h.value for h in at.header][0].startswith("1. ")  # the Lesson ran, with the key nowhere on it


def test_the_key_from_the_secrets_file_and_the_environment_wins(store, demo_data, monkeypatch):
    at = open_as("nobody", monkeypatch, secrets={"teacher_key": "from secrets"})
    assert [t.label for t in at.sidebar.text_input] == ["Teacher key"]
    enter_key(at, "from secrets")
    assert not at.sidebar.text_input  # unlocked

    monkeypatch.setenv("CXR_TEACHER_KEY", KEY)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.secrets["teacher_key"] = "from secrets"
    at.run()
    enter_key(at, "from secrets")
    assert at.sidebar.error and at.sidebar.text_input  # the environment's key is the one that counts
    enter_key(at, KEY)
    assert not at.sidebar.text_input


def test_reading_the_secrets_file(tmp_path, monkeypatch):
    """No secrets file: no key, no error. A file that cannot be parsed: locked, with a message."""
    monkeypatch.delenv("CXR_TEACHER_KEY", raising=False)
    monkeypatch.setattr(teacher.st, "secrets", Secrets())
    saved = streamlit_config.get_option("secrets.files")
    try:
        streamlit_config.set_option("secrets.files", [str(tmp_path / "missing" / "secrets.toml")])
        assert teacher.configured_key() is None
        broken = tmp_path / "secrets.toml"
        broken.write_text('teacher_key = "unterminated\n')
        monkeypatch.setattr(teacher.st, "secrets", Secrets())
        streamlit_config.set_option("secrets.files", [str(broken)])
        with pytest.raises(UserError, match="secrets file cannot be read"):
            teacher.configured_key()
        broken.write_text('teacher_key = "from the file"\n')
        monkeypatch.setattr(teacher.st, "secrets", Secrets())
        assert teacher.configured_key() == "from the file"
        monkeypatch.setenv("CXR_TEACHER_KEY", KEY)
        assert teacher.configured_key() == KEY
    finally:
        streamlit_config.set_option("secrets.files", saved)
        monkeypatch.delenv("teacher_key", raising=False)  # Streamlit copies top-level secrets into os.environ


# ---------------------------------------------------------------- Train


@pytest.mark.parametrize("who", STATES)
def test_train_button(who, store, demo_data, no_worker, monkeypatch):
    at = open_as(who, monkeypatch, TRAIN)
    expect_lock(at, who, "Train", "train or queue runs")
    press(at, "Train")
    assert len(store.list()) == (0 if who == "student" else 1)


@pytest.mark.parametrize("who", STATES)
def test_train_the_study_lineup(who, store, demo_data, no_worker, monkeypatch):
    at = open_as(who, monkeypatch, TRAIN)
    expect_lock(at, who, "Train the study's lineup", "train or queue runs")
    press(at, "Train the study's lineup")
    assert len(store.list()) == (0 if who == "student" else len(MODEL_NAMES))


@pytest.fixture
def running_job(store, demo_data):
    """A run the store reads as running: a stand-in process whose command line names cxr_core."""
    run = store.new_run(default_settings("regularized_cnn").to_dict(), str(demo_data), state=RunState.RUNNING)
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "cxr_core"], start_new_session=True)
    store.set_status(run.run_id, pid=job.pid, started=time.time(), epoch=0, batch=0, steps_per_epoch=4)
    yield run.run_id, job
    if job.poll() is None:
        job.kill()
    job.wait()


@pytest.mark.parametrize("who", STATES)
def test_stop_and_remove(who, store, demo_data, running_job, no_worker, monkeypatch):
    run_id, job = running_job
    waiting = jobs.submit(default_settings("baseline_cnn"), demo_data, store, start=False)
    cancelled, cancel = [], jobs.cancel
    monkeypatch.setattr(jobs, "cancel", lambda run, runs=None: cancelled.append(run) or cancel(run, runs))
    at = open_as(who, monkeypatch, TRAIN)
    expect_lock(at, who, "Stop", "stop or remove runs")
    assert button(at, "Remove").disabled == (who == "student")
    press(at, "Remove")
    press(at, "Stop")
    if who == "student":
        assert cancelled == [] and store.get(waiting).state == RunState.QUEUED
        assert job.poll() is None and store.get(run_id).state == RunState.RUNNING
    else:
        assert cancelled == [waiting, run_id] and store.get(waiting).state == RunState.CANCELLED
        assert job.wait(timeout=20) == -signal.SIGTERM


@pytest.mark.parametrize("who", STATES)
def test_delete(who, store, demo_data, no_worker, monkeypatch):
    run = store.new_run(default_settings("baseline_cnn").to_dict(), str(demo_data), state=RunState.CANCELLED)
    at = open_as(who, monkeypatch, TRAIN)
    expect_lock(at, who, "Delete...", "delete runs")
    press(at, "Delete...")
    if who == "student":
        assert not [b for b in at.button if b.label == "Yes, delete it"]
        assert [r.run_id for r in store.list()] == [run.run_id]
        return
    press(at, "Yes, delete it")
    assert store.list() == []


# ---------------------------------------------------------------- Compare and Lesson


@pytest.mark.parametrize("who", STATES)
def test_compare_score_on_another_folder(who, store, finished, demo_data, no_worker, monkeypatch):
    at = open_as(who, monkeypatch, COMPARE)
    expect_lock(at, who, "Score", "queue scorings")
    press(at, "Score")
    requests = jobs.evaluation_requests(store)
    assert [r["run"] for r in requests] == ([] if who == "student" else [finished])


@pytest.mark.parametrize("who", STATES)
def test_lesson_queues_training(who, store, demo_data, no_worker, monkeypatch):
    at = open_as(who, monkeypatch, LESSON, step=4)
    label = "Train regularized_cnn (our recipe)"
    expect_lock(at, who, label, "queue training runs")
    press(at, label)
    assert [r.model for r in jobs.queued(store)] == ([] if who == "student" else ["regularized_cnn"])


@pytest.mark.parametrize("who", STATES)
def test_lesson_queues_scoring(who, store, finished, demo_data, no_worker, monkeypatch):
    at = open_as(who, monkeypatch, LESSON, step=7)
    label = "Score this run with the lung fields occluded, and with only them"
    expect_lock(at, who, label, "queue scorings")
    press(at, label)
    occluded = sorted(r["occlusion"] for r in jobs.evaluation_requests(store))
    assert occluded == ([] if who == "student" else ["lungs", "outside"])


# ---------------------------------------------------------------- the bounded queue, as the page shows it


def test_a_full_queue_is_a_one_line_message_on_the_train_page(store, demo_data, no_worker, monkeypatch):
    monkeypatch.setenv("CXR_MAX_QUEUED", "1")
    jobs.submit(default_settings("baseline_cnn"), demo_data, store, start=False)
    at = open_as("teacher", monkeypatch, TRAIN)
    press(at, "Train")
    (message,) = [e.value for e in at.error]
    assert message.startswith("the queue is full") and "\n" not in message
    press(at, "Train the study's lineup")
    assert any("for 4 more" in e.value for e in at.error)  # baseline_cnn already waits: not queued twice
    assert len(store.list()) == 1  # the lineup is queued whole or not at all

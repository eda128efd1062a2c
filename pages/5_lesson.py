"""Lesson: the study step by step, for a class. The step is in the URL (?step=4), so a projector
and thirty laptops can be on the same step."""

import streamlit as st

from cxr_core import lesson, report
from ui import data_sets, lesson_steps
from ui import runs as ui_runs
from ui.navigation import entry_guard
from ui.texts import DEMO_LABEL, SYNTHETIC_NOTE

entry_guard(__file__)
STEPS = lesson.STEPS


def current_step() -> int:
    try:
        return min(max(int(st.query_params.get("step", 1)), 1), len(STEPS))
    except ValueError:  # ?step=abc: start at the beginning rather than fail
        return 1


def go_to(step: int) -> None:
    st.query_params["step"] = str(step)
    st.rerun()


def navigation(step: int, where: str) -> None:
    back, middle, forward = st.columns([1, 4, 1])
    if back.button("Previous", icon=":material/arrow_back:", disabled=step == 1, key=f"previous_{where}",
                   width="stretch"):
        go_to(step - 1)
    if forward.button("Next", icon=":material/arrow_forward:", disabled=step == len(STEPS), key=f"next_{where}",
                      type="primary", width="stretch"):
        go_to(step + 1)
    middle.progress(step / len(STEPS), text=f"Step {step} of {len(STEPS)}")


step = current_step()
if st.query_params.get("step") != str(step):
    st.query_params["step"] = str(step)  # the URL always says which step is on screen
st.title("Lesson")
scan, split = data_sets.require()
data_sets.caption(scan)
if scan.synthetic:
    st.warning(f"**{DEMO_LABEL}.** {SYNTHETIC_NOTE} The steps work the same on the real "
               "data set; the numbers below are about drawn shapes.", icon=":material/science:")
navigation(step, "top")
# The chooser follows the URL (a button or a link may have moved the step since the last run);
# a choice moves the URL before the page runs again.
st.session_state["lesson_jump"] = step
st.selectbox("Go to step", range(1, len(STEPS) + 1), key="lesson_jump",
             format_func=lambda n: f"{n}. {STEPS[n - 1].title}",
             on_change=lambda: st.query_params.update(step=str(st.session_state["lesson_jump"])))

info = STEPS[step - 1]
st.header(f"{step}. {info.title}")
st.markdown(info.explanation)
store = ui_runs.store()
context = lesson_steps.Context(scan, split, store, lesson.picker_runs(store, scan.root))
if any(run.status.get("synthetic") for run in context.runs.values()):
    st.caption(f"The runs in this lesson were trained on the {DEMO_LABEL}.")
if step == 1:
    lesson_steps.readiness(context)
lesson_steps.VIEWS[step - 1](context)
st.info(f"**Discuss.** {info.question}", icon=":material/forum:")
navigation(step, "bottom")
st.page_link("pages/6_read.py", label="Read: every student reads X-rays, then lands beside the model on one ROC plot",
             icon=":material/visibility:")

if context.runs:
    st.download_button(
        "Download report", icon=":material/download:", file_name="lesson_report.html", mime="text/html",
        data=lambda: report.build_report([r.run_id for r in context.runs.values() if r.evaluation("test")], store,
                                         title="Chest X-ray pneumonia study: the lesson's runs",
                                         notes=[f"Step {n}. {s.title}: {s.question}" for n, s in enumerate(STEPS, 1)]),
        help="One HTML file (figures, settings, data set, intervals, date) that opens without a network.")

"""What the dashboard's pages share, and nothing they compute: that lives in `cxr_core`.

    ui.navigation   deep links through app.py, links between pages
    ui.data_sets    the data set chooser, the active data set, its scan and thumbnails (cached)
    ui.runs         the run store, stored predictions and the predictor process (cached),
                    the "no finished runs" state, queueing a scoring job
    ui.texts        the warnings every page repeats
    ui.teacher      classroom mode: may this browser session train, stop, queue, delete?
    ui.lesson_steps the Lesson page's steps, and its readiness summary for the teacher
    ui.reading      the Read page: reading sets, one student's reading and result, the class view

Pages import these as `from ui import data_sets, runs, ...` (Streamlit puts the
app's folder on sys.path); figures come from `cxr_core.figures`, numbers from
the rest of `cxr_core`.
"""

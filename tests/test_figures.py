"""figures: the charts pages and reports draw, from cxr_core's tables (no Streamlit)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cxr_core import data, explore, figures
from cxr_core.config import CLASSES


def _names(fig: go.Figure) -> list[str]:
    return sorted(trace.name for trace in fig.data)


def test_the_dataset_charts_draw_one_trace_per_class_in_its_colour(demo_dir):
    scan = data.scan_folder(demo_dir)
    split = data.assign_splits(scan.manifest)
    per_patient = figures.per_patient_figure(explore.images_per_patient(split))
    assert _names(per_patient) == list(CLASSES)
    assert {t.name: t.marker.color for t in per_patient.data} == figures.CLASS_COLORS
    sizes = pd.DataFrame({"width": [100, 120, 90], "height": [100, 110, 95], "aspect": [1.0, 1.09, 0.95],
                          "class_name": ["NORMAL", "PNEUMONIA", "PNEUMONIA"]})
    assert _names(figures.sizes_figure(sizes)) == list(CLASSES)
    assert _names(figures.aspect_figure(sizes)) == list(CLASSES)


def test_the_intensity_chart_plots_each_class_histogram():
    class Look:
        def __init__(self, peak):
            self.histogram = np.zeros(256)
            self.histogram[peak] = 1.0

    fig = figures.intensity_figure({"NORMAL": Look(40), "PNEUMONIA": Look(200)})
    by_class = {trace.name: np.asarray(trace.y) for trace in fig.data}
    assert by_class["NORMAL"].argmax() == 40 and by_class["PNEUMONIA"].argmax() == 200
    assert fig.layout.xaxis.title.text == "gray level"


def test_the_confusion_chart_reads_tn_fp_fn_tp_with_counts_and_shares():
    fig = figures.confusion_figure([[8, 2], [1, 9]], "run", normalized=True)
    text = fig.data[0].text
    assert text[0][1].startswith("<b>FP</b><br>2") and "(20%)" in text[0][1]
    assert text[1][0].startswith("<b>FN</b><br>1") and "(10%)" in text[1][0]
    np.testing.assert_allclose(fig.data[0].z, [[0.8, 0.2], [0.1, 0.9]])

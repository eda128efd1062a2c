"""Plotly figures of the study: what the dashboard's pages show and what reports embed.

Plain functions of tables and evaluation dicts (no Streamlit), so the pages,
`cxr_core.report` and scripts draw the same charts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import reference
from .config import CLASSES

CLASS_COLORS = {"NORMAL": "#2b6cb0", "PNEUMONIA": "#c53030"}


def counts_figure(summary: pd.DataFrame) -> go.Figure:
    fig = px.bar(summary, x="split", y="images", color="class_name", barmode="group", text="images",
                 category_orders={"class_name": list(CLASSES)},
                 color_discrete_map=CLASS_COLORS, hover_data=["patients"], labels={"class_name": "class"})
    return fig.update_layout(height=320, margin=dict(t=30, b=10))


def per_patient_figure(per_patient: pd.DataFrame) -> go.Figure:
    """explore.images_per_patient() as grouped bars: how many children have 1, 2, 3... images."""
    fig = px.bar(per_patient, x="images_per_patient", y="patients", color="class_name", barmode="group",
                 color_discrete_map=CLASS_COLORS,
                 labels={"images_per_patient": "images per patient", "class_name": "class"})
    return fig.update_layout(height=300, margin=dict(t=30, b=10))


def sizes_figure(sizes: pd.DataFrame) -> go.Figure:
    """explore.image_size_table(): width against height, by class."""
    fig = px.scatter(sizes, x="width", y="height", color="class_name", opacity=0.6,
                     color_discrete_map=CLASS_COLORS, labels={"class_name": "class"})
    return fig.update_layout(height=320)


def aspect_figure(sizes: pd.DataFrame) -> go.Figure:
    """explore.image_size_table(): a histogram of aspect ratios, by class."""
    fig = px.histogram(sizes, x="aspect", color="class_name", nbins=30, barmode="overlay",
                       color_discrete_map=CLASS_COLORS,
                       labels={"aspect": "aspect (width / height)", "class_name": "class"})
    return fig.update_layout(height=320)


def intensity_figure(appearance: dict) -> go.Figure:
    """explore.class_appearance(): each class's share of pixels at each gray level."""
    fig = go.Figure([go.Scatter(x=list(range(256)), y=appearance[c].histogram, name=c, line_color=CLASS_COLORS[c])
                     for c in CLASSES])
    return fig.update_layout(height=300, margin=dict(t=30, b=10), xaxis_title="gray level",
                             yaxis_title="share of pixels", title="Pixel intensity")


def confusion_figure(cm, title: str, normalized: bool = False) -> go.Figure:
    """2x2 heat map labelled NORMAL/PNEUMONIA with TN/FP/FN/TP; rows are the truth."""
    counts = np.asarray(cm, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    names = [["TN", "FP"], ["FN", "TP"]]
    text = [[f"<b>{names[i][j]}</b><br>{counts[i, j]:.0f}" + (f" ({shares[i, j]:.0%})" if normalized else "")
             for j in range(2)] for i in range(2)]
    fig = go.Figure(go.Heatmap(z=shares if normalized else counts, x=list(CLASSES), y=list(CLASSES), text=text,
                               texttemplate="%{text}", colorscale="Blues", showscale=False,
                               hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>"))
    fig.update_layout(title=title, height=300, margin=dict(t=40, b=10, l=10, r=10),
                      xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed")
    return fig


def run_colors(labels) -> dict[str, str]:
    """One colour per run, the same in every chart of a page."""
    palette = px.colors.qualitative.Plotly
    return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def _short(name: str) -> str:
    """ "Seed study: regularized CNN" -> "seed regularized CNN"; "Kermany et al. 2018: ..." -> "Kermany et al. 2018"."""
    head, _, tail = name.partition(":")
    return f"seed {tail.strip()}" if head.startswith("Seed study") else head


def curves_figure(evaluations: dict, points: dict, colors: dict | None = None) -> go.Figure:
    """ROC and precision-recall curves of {label: evaluation}, each run's operating point from `points`,
    and published results on the official test split as grey crosses."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ROC: sensitivity vs false-alarm rate",
                                                        "Precision vs recall (sensitivity)"))
    colors = colors or run_colors(evaluations)
    for label, evaluation in evaluations.items():
        color = colors[label]
        if evaluation.get("roc"):
            roc, pr = evaluation["roc"], evaluation["pr"]
            fig.add_scatter(x=roc["fpr"], y=roc["tpr"], name=label, line_color=color, legendgroup=label, row=1, col=1)
            fig.add_scatter(x=pr["recall"], y=pr["precision"], name=label, line_color=color, legendgroup=label,
                            showlegend=False, row=1, col=2)
        at = points.get(label) or {}
        if at.get("sensitivity") is not None and at.get("specificity") is not None:
            marker = dict(color=color, size=12, symbol="circle-open", line_width=3)
            hover = f"{label} at threshold {at['threshold']:.2f}"
            fig.add_scatter(x=[1 - at["specificity"]], y=[at["sensitivity"]], mode="markers", marker=marker,
                            name=hover, legendgroup=label, showlegend=False, row=1, col=1)
            if at.get("precision") is not None:
                fig.add_scatter(x=[at["sensitivity"]], y=[at["precision"]], mode="markers", marker=marker,
                                name=hover, legendgroup=label, showlegend=False, row=1, col=2)
    published = [r for r in reference.PUBLISHED if r["sensitivity"] is not None and r["specificity"] is not None]
    fig.add_scatter(x=[1 - r["specificity"] for r in published], y=[r["sensitivity"] for r in published],
                    mode="markers+text", text=[_short(r["name"]) for r in published], textposition="bottom right",
                    marker=dict(symbol="x", size=9, color="grey"), name="published (official test split)", row=1, col=1)
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="lightgrey"), name="chance",
                    row=1, col=1)
    fig.update_xaxes(title_text="1 - specificity", range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="sensitivity", range=[-0.02, 1.02], row=1, col=1)
    fig.update_xaxes(title_text="recall", range=[-0.02, 1.02], row=1, col=2)
    fig.update_yaxes(title_text="precision", range=[-0.02, 1.02], row=1, col=2)
    return fig.update_layout(height=420, margin=dict(t=40, b=10), legend=dict(orientation="h", y=-0.2))


def history_figure(history: pd.DataFrame, metrics=("loss", "accuracy"), colors: dict | None = None) -> go.Figure:
    """Training (solid) and validation (dashed) curves per run, one panel per metric."""
    part = history[history["metric"].isin(metrics)]
    fig = px.line(part, x="epoch", y="value", color="run", line_dash="phase", facet_col="metric", markers=True,
                  color_discrete_map=colors or run_colors(history["run"].unique()),
                  category_orders={"metric": list(metrics), "phase": ["training", "validation"]})
    fig.update_yaxes(matches=None, showticklabels=True, title_text="")
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return fig.update_layout(height=340, margin=dict(t=30, b=10))


def reliability_figure(report: dict, title: str = "Reliability") -> go.Figure:
    """calibration.calibration_report()'s bins: predicted against observed share of PNEUMONIA, before and
    after temperature scaling; the diagonal is a perfectly calibrated model."""
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="lightgrey"), name="calibrated")
    for key, name, color in (("bins", f"as trained (ECE {report['ece']:.3f})", "#c53030"),
                             ("bins_scaled", f"temperature {report['temperature']:.2f} "
                                             f"(ECE {report['ece_scaled']:.3f})", "#2b6cb0")):
        bins = report[key]
        fig.add_scatter(x=bins["mean_predicted"], y=bins["observed"], mode="lines+markers", name=name,
                        line_color=color, marker=dict(size=[6 + 14 * c / max(max(bins["count"]), 1)
                                                            for c in bins["count"]]),
                        customdata=bins["count"], hovertemplate="predicted %{x:.2f}, observed %{y:.2f}, "
                                                                "%{customdata} images<extra></extra>")
    fig.update_xaxes(title_text="mean predicted P(pneumonia) in the bin", range=[-0.02, 1.02])
    fig.update_yaxes(title_text="observed share of PNEUMONIA", range=[-0.02, 1.02])
    return fig.update_layout(title=title, height=380, margin=dict(t=40, b=10), legend=dict(orientation="h", y=-0.25))

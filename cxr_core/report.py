"""A report to take away: one self-contained HTML file comparing runs.

    from cxr_core import report
    html = report.build_report(["RUN_A", "RUN_B"], store)       # a str; write it anywhere
    python -m cxr_core report RUN RUN... --out report.html

It holds the date, the data set, each run's settings, the metrics with their
95% intervals, and the figures the dashboard draws (plotly, interactive). The
plotly.js bundle that ships inside the plotly package is inlined once and
images are data URLs, so the file opens offline, with no server and no CDN.
"""

from __future__ import annotations

import base64
import html
import io
import os
import time

import numpy as np
import plotly.io as pio
from PIL import Image

from . import calibration, figures, images, run_tables
from .config import METRICS, UserError
from .store import OWN, RunStore

SETTINGS = ("model", "epochs", "image_size", "batch_size", "learning_rate", "augment", "class_weighting",
            "weights", "seed", "threshold_rule")
_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#1a202c}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #cbd5e0;padding:4px 8px}
th{background:#edf2f7}.warn{background:#fefcbf;border:1px solid #d69e2e;padding:0.6em 1em}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid figure{margin:0;width:220px;font-size:0.8em}"""


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def png_data_url(pixels: np.ndarray) -> str:
    """A uint8 image (gray or RGB) as a data: URL, so the report needs no files beside it."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class _Figures:
    """Plotly figures as HTML; the first one carries plotly.js (inlined, from the plotly package)."""

    def __init__(self):
        self.count = 0

    def __call__(self, fig) -> str:
        self.count += 1
        return pio.to_html(fig, full_html=False, include_plotlyjs=self.count == 1, include_mathjax=False,
                           config={"displaylogo": False})


def _mistakes(run, evaluation: dict, predictions, limit: int = 4) -> str:
    """The most confident missed pneumonias and false alarms, as small images (what to look at first)."""
    try:
        root = run_tables.image_root(run, evaluation)
    except UserError as error:
        return f"<p>The images cannot be shown: {html.escape(str(error))}</p>"
    cells = []
    for cell in ("FN", "FP"):
        for row in run_tables.confusion_cell(predictions, evaluation["threshold"], cell).head(limit).itertuples():
            try:
                url = png_data_url(images.load_for_model(root / row.path, 160)[..., 0])
            except images.ImageDecodeError:
                continue
            cells.append(f'<figure><img src="{url}" width="160" height="160" alt=""><figcaption>{cell}: '
                         f'{html.escape(os.path.basename(row.path))}, P(pneumonia) {row.probability:.3f}'
                         "</figcaption></figure>")
    return f'<div class="grid">{"".join(cells)}</div>' if cells else "<p>No mistakes at this threshold.</p>"


def build_report(run_ids: list[str], store: RunStore | None = None, *, split: str = "test", source: str = OWN,
                 title: str = "Chest X-ray pneumonia study: runs compared", notes: list[str] = ()) -> str:
    """The HTML of the report on `run_ids`, scored on (split, source); raises UserError for a missing run
    or evaluation."""
    store = store or RunStore()
    by_label = {run_tables.run_label(run): run for run in (store.get(run_id) for run_id in run_ids)}
    if not by_label:
        raise UserError("name at least one run for the report")
    evaluations = _evaluations(by_label, split, source)
    where = run_tables.evaluation_label((split, source), list(by_label.values()))
    figure = _Figures()
    parts = [*_introduction(title, by_label, notes),
             *_data_and_settings(by_label, evaluations, where),
             *_metrics(evaluations, where),
             *_curves(by_label, evaluations, figure),
             *_calibration(by_label, store, split, source, figure),
             *_most_confident_mistakes(by_label, evaluations, store, split, source)]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>")


def _evaluations(by_label: dict, split: str, source: str) -> dict:
    """{label: the run's evaluation on (split, source)}; UserError for a run without one."""
    evaluations = {}
    for label, run in by_label.items():
        evaluation = run.evaluation(split, source)
        if evaluation is None:
            raise UserError(f"run {run.run_id} has no {split} evaluation on {source}; evaluate it first "
                            f"(`python -m cxr_core evaluate {run.run_id} --split {split}`)")
        evaluations[label] = evaluation
    return evaluations


def _introduction(title: str, by_label: dict, notes) -> list[str]:
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>Made {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by cxr_core. "
             "<b>Not for clinical use</b>: a teaching and research tool.</p>"]
    if any(run.status.get("synthetic") for run in by_label.values()):
        parts.append('<p class="warn"><b>SYNTHETIC demo data.</b> Some of these runs were trained on the '
                     "synthetic demo data set: drawn shapes, not X-rays of any person. Their numbers say nothing "
                     "about real X-rays.</p>")
    return parts + [f"<p>{html.escape(note)}</p>" for note in notes]


def _data_and_settings(by_label: dict, evaluations: dict, where: str) -> list[str]:
    def counts(run) -> str:
        return "/".join(str((run.status.get("counts") or {}).get(s, "?")) for s in ("train", "val", "test"))

    data = [{"run": label, "data folder": e.get("data_dir") or by_label[label].settings.get("data_dir"),
             "synthetic": bool(by_label[label].status.get("synthetic")), "evaluated on": where,
             "images": e.get("n"), "NORMAL": e.get("n_normal"), "PNEUMONIA": e.get("n_pneumonia"),
             "split counts (train/val/test)": counts(by_label[label])} for label, e in evaluations.items()]
    settings = [{"run": label, "id": run.run_id, **{k: run.settings.get(k) for k in SETTINGS},
                 "device": run.status.get("device"),
                 "minutes": round(run.status["duration"] / 60, 1) if run.status.get("duration") else None}
                for label, run in by_label.items()]
    return ["<h2>Data</h2>", _table(data), "<h2>Runs and their settings</h2>", _table(settings)]


def _metrics(evaluations: dict, where: str) -> list[str]:
    table = run_tables.metrics_table(evaluations)
    rows = [{"run": row["run"], "images": row["n"], "threshold": row["threshold"],
             **{m: _with_interval(row, m) for m in METRICS}} for row in table.to_dict("records")]
    return [f"<h2>Metrics on the {html.escape(where)}</h2>", _table(rows),
            "<p>At each run's own threshold (chosen on validation). In brackets: 95% bootstrap intervals "
            "(resampling patients). Sensitivity is the share of pneumonia caught, specificity the share of "
            "healthy children cleared.</p>"]


def _curves(by_label: dict, evaluations: dict, figure) -> list[str]:
    """Confusion matrices, ROC and precision-recall, and the training curves."""
    colors = figures.run_colors(evaluations)
    parts = ["<h2>Confusion matrices</h2><div class='grid'>"]
    for label, evaluation in evaluations.items():
        parts.append(f"<div style='width:380px'>{figure(figures.confusion_figure(evaluation['confusion_matrix'], label))}</div>")
    points = {label: {k: e.get(k) for k in ("threshold", "sensitivity", "specificity", "precision")}
              for label, e in evaluations.items()}
    parts += ["</div><h2>ROC and precision-recall</h2>", figure(figures.curves_figure(evaluations, points, colors))]
    history = run_tables.history_frame(by_label)
    if not history.empty:
        parts.append("<h2>Training curves</h2>" + figure(figures.history_figure(history, colors=colors)))
    return parts


def _calibration(by_label: dict, store: RunStore, split: str, source: str, figure) -> list[str]:
    parts = ["<h2>Calibration</h2>"]
    for label, run in by_label.items():
        try:
            report = calibration.for_run(run.run_id, store, split, source)
        except UserError as error:
            parts.append(f"<p>{html.escape(label)}: {html.escape(str(error))}</p>")
            continue
        parts.append(figure(figures.reliability_figure(report, f"{label}: Brier {report['brier']:.3f}")))
    return parts


def _most_confident_mistakes(by_label: dict, evaluations: dict, store: RunStore, split: str, source: str) -> list[str]:
    from .inference import predictions as stored_predictions

    parts = ["<h2>The most confident mistakes</h2>"]
    for label, run in by_label.items():
        predictions = stored_predictions(run.run_id, split, store, source)
        if predictions is not None:
            parts.append(f"<h3>{html.escape(label)}</h3>" + _mistakes(run, evaluations[label], predictions))
    return parts


def _with_interval(row: dict, metric: str) -> str:
    value, low, high = row.get(metric), row.get(f"{metric}_low"), row.get(f"{metric}_high")
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and not np.isnan(low) else "")

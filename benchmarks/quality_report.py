"""The quality benchmark's tables: quality.md and docs/results.md (render), and the pieces of the README's
one small table (published_rows, readme_table; benchmarks/ablation.py writes it)."""

from __future__ import annotations

import common
from cxr_core import evaluate, reference
from cxr_core.config import METRIC_LABELS as LABELS
from cxr_core.config import METRICS

OFFLINE = "random init (ImageNet weights not available offline)"
METRIC_LABELS = tuple(LABELS[m] for m in METRICS)


def metric_cell(row: dict, metric: str) -> str:
    return evaluate.with_interval(row.get(metric), (row.get("ci95") or {}).get(metric))


def _minutes(seconds) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.1f} min"


def _table(rows: list[dict], key: str | None) -> str:
    """One markdown table of the lineup, on the shifted test folder (key "shifted") or the own split."""
    def scores(r):
        return r if key is None else (r.get(key) or {})

    return common.markdown_table(
        ["model", "weights", "image px", "epochs run", "train time", "threshold", *METRIC_LABELS],
        [[r["model"], r["weights_used"], r["image_size"],
          "-" if r["epochs_run"] is None else f"{r['epochs_run']} of {r['epochs_configured']}" + ("*" if r["epochs_overridden"] else ""),
          _minutes(r["train_seconds"]), scores(r).get("threshold"), *[metric_cell(scores(r), m) for m in METRICS]]
         for r in rows])


def render(result: dict) -> str:
    """The markdown body shared by quality.md and docs/results.md."""
    rows = result["rows"] + ([result["ensemble"]] if result.get("ensemble") else [])
    published = common.markdown_table(
        ["published, official test split", "source", *METRIC_LABELS],
        [[p["name"], p["source"], *[p.get(m) for m in METRICS]] for p in reference.PUBLISHED])
    split = result.get("test_split") or {}
    shifted = next((r["shifted"] for r in rows if r.get("shifted")), None)
    lines = [
        common.provenance(result),
        "",
        f"Trained on `{result['data']}`, each model with its defaults and the same seed (the same "
        "patient-grouped split); thresholds chosen on validation; 95% intervals in brackets from a bootstrap "
        "over patients; sensitivity is pneumonia recall, specificity normal recall.",
    ]
    if result.get("synthetic"):
        lines += ["", "**SYNTHETIC demo data: these figures only show that the benchmark runs; they say nothing about X-rays.**"]
    if shifted:
        lines += ["", f"**On the official test split** (`{result['test_data']}`: {shifted['n_test']} images, "
                  f"{shifted['n_normal']} normal, {shifted['n_pneumonia']} pneumonia; the dev half here, a user's full "
                  "`test/` elsewhere). Recipe choices were made while looking at this half, so its figures are "
                  "optimistic; the other half is withheld and scored independently.", "", _table(rows, "shifted")]
    lines += ["", f"**On the test split carved from train** ({split.get('n', '?')} images, {split.get('n_normal', '?')} "
              f"normal, {split.get('n_pneumonia', '?')} pneumonia; {split.get('kind', '')}): in-distribution, it "
              "flatters every model.", "", _table(rows, None), ""]
    notes = []
    overrides = result.get("epochs_override") or {}
    if overrides:
        notes.append("\\* epochs overridden for the CPU budget (" + ", ".join(f"{m}={n}" for m, n in overrides.items())
                     + "); \"epochs run\" is what ran (early stopping on validation AUC may stop sooner).")
    else:
        notes.append("\"epochs run\" is what ran of the default (early stopping on validation AUC may stop sooner).")
    if any(r.get("weights_used") == OFFLINE for r in result["rows"]):
        notes.append("Transfer models marked \"random init\" ran without their ImageNet weights (no network here): "
                     "they are NOT the pretrained models of the study, and their figures understate them.")
    notes.append("Train time is the wall time of the `train` job: decoding images into the cache (paid by the "
                 "first model at each image size), fitting, and scoring the val and test splits.")
    if result.get("ensemble"):
        notes.append(f"The ensemble averages the probabilities of {', '.join(result['ensemble']['members'])}; "
                     f"its threshold: {result['ensemble']['threshold_rule']}.")
    if result.get("failed"):
        notes.append("Failed: " + "; ".join(f"{f['model']}: {f['error']}" for f in result["failed"]))
    lines += [f"- {n}" for n in notes]
    lines += ["", "Published figures (not measured here):", "", published, "", reference.NOT_COMPARABLE]
    return "\n".join(lines)


README_HEADERS = ["model", "test images", *METRIC_LABELS]


def published_rows() -> list[dict]:
    return [{"name": f"published: {p['name']}", "images": "624", **{m: p.get(m) for m in METRICS}}
            for p in reference.PUBLISHED]


def readme_table(rows: list[dict]) -> str:
    """One markdown table from {"name", "images", METRICS...} dicts: adding a row is adding a dict."""
    return common.markdown_table(README_HEADERS, [[r["name"], r["images"], *[r.get(m) for m in METRICS]] for r in rows])

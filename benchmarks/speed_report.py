"""The speed benchmark's report: docs/performance.md's table, the per-side training table and the notes.

Every row names the commit that measured it; figures over repeats read "median [min, max]" and say
how many repeats there were. Training figures are recomputed from the stored per-run records.
"""

from __future__ import annotations

from pathlib import Path

import common

TARGETS = {"predict_p95_ms": 150, "gradcam_p95_ms": 500, "page_s": 1.5, "training_peak_gib": 3.0,
           "dashboard_peak_gib": 1.5}
SIDES = {"seed_regularized": "regularized_cnn, the study's recipe", "ours": "regularized_cnn, our recipe"}


def section_flags(name: str, args) -> str:
    """The flags that shortened or changed this section's measurement (empty: the full figure)."""
    flags = []
    if name == "training":
        default_dev = Path(args.test_data).expanduser().resolve() == common.DEFAULT_TEST_DATA.resolve()
        flags = [("epochs", args.epochs), ("image-size", args.image_size),
                  ("repeats", args.repeats if args.repeats < 3 else None),
                  ("test-data", None if default_dev else common.project_relative(args.test_data))]
    flags.append(("calls", args.calls if name == "predict" and args.calls != 50 else None))
    return " ".join(f"--{k} {v}" for k, v in flags if v is not None)


def verdict(value, target) -> str:
    return "n/a" if value is None else "yes" if value <= target else "NO"  # every target is an upper bound


def spread_text(values: list, digits: int = 3, unit: str = "") -> str:
    """"median [min, max]" of the repeats' values (one repeat: the value); n/a when none has one."""
    s = common.spread(values)
    if s["median"] is None:
        return "n/a"
    text = f"{s['median']:.{digits}f}{unit}"
    return text + (f" [{s['min']:.{digits}f}, {s['max']:.{digits}f}]" if s["n"] - s["missing"] > 1 else "")


def macro_f1_from_rates(accuracy, sensitivity, specificity) -> float | None:
    """Macro F1 of a binary result known by its accuracy, sensitivity and specificity on one folder (results
    stored before the macro F1 was): the three fix the share of positives p and so the confusion matrix up
    to scale. None when sensitivity equals specificity (p undetermined) or a figure is missing."""
    if None in (accuracy, sensitivity, specificity) or abs(sensitivity - specificity) < 1e-9:
        return None
    p = (accuracy - specificity) / (sensitivity - specificity)
    if not 0 < p < 1:
        return None
    tp, fn, tn, fp = sensitivity * p, (1 - sensitivity) * p, specificity * (1 - p), (1 - specificity) * (1 - p)
    return ((2 * tp / (2 * tp + fp + fn) if tp else 0.0) + (2 * tn / (2 * tn + fn + fp) if tn else 0.0)) / 2


def side_values(t: dict, side: str, figure: str) -> list:
    """One figure of every repeat of a side, from the stored runs."""
    runs = [r for r in t["runs"] if r["side"] == side]
    if figure == "macro_f1":
        return [r["final"].get("macro_f1") or macro_f1_from_rates(*(r["final"].get(k) for k in
                ("accuracy", "sensitivity", "specificity"))) for r in runs]
    if figure in ("accuracy", "auc"):
        return [r["final"].get(figure) for r in runs]
    return [r.get(figure) for r in runs]


def repeats_text(t: dict) -> str:
    n = len({r["repeat"] for r in t["runs"]})
    return f"{n} repeat" + ("s" if n != 1 else "")


def training_rows(t: dict, flags: str) -> list[list]:
    ours, study = ({f: side_values(t, side, f) for f in ("total_wall_s", "accuracy", "auc", "macro_f1", "peak_rss_mib")}
                   for side in ("ours", "seed_regularized"))
    median = {side: {f: common.spread(v)["median"] for f, v in values.items()}
              for side, values in (("ours", ours), ("study", study))}
    better = all(None not in (median["ours"][f], median["study"][f]) and median["ours"][f] > median["study"][f]
                 for f in ("accuracy", "auc", "macro_f1"))
    faster = median["ours"]["total_wall_s"] <= median["study"]["total_wall_s"]
    ratio = median["study"]["total_wall_s"] / median["ours"]["total_wall_s"]
    less = f"{ratio:.1f}x less" if ratio >= 1 else f"{1 / ratio:.1f}x more"
    scores = "; ".join(f"{label} {spread_text(ours[f])} vs {spread_text(study[f])}"
                       for label, f in (("accuracy", "accuracy"), ("AUC", "auc"), ("macro F1", "macro_f1")))
    gib = [[None if v is None else v / 1024 for v in side["peak_rss_mib"]] for side in (ours, study)]
    return [[f"full default run, ours vs `train --recipe study`, {repeats_text(t)}{flags}: total wall time; "
             "dev accuracy, AUC, macro F1", f"{spread_text(ours['total_wall_s'], 0, ' s')} vs "
             f"{spread_text(study['total_wall_s'], 0, ' s')} ({less}); {scores}",
             "no slower, and better on all three", "yes" if faster and better else "NO"],
            [f"training peak memory, ours vs the study's recipe (the same runs, {repeats_text(t)})",
             f"{spread_text(gib[0], 2, ' GiB')} vs {spread_text(gib[1], 2, ' GiB')}", "<= 3 GiB (ours)",
             verdict(common.spread(gib[0])["max"], TARGETS["training_peak_gib"])]]


def training_table(t: dict) -> str:
    header = ["side", "repeats", "dev accuracy", "dev AUC", "dev macro F1", "total wall time", "seconds per epoch",
              "dev scoring (excluded)", "peak memory"]
    shown = (("accuracy", 3, ""), ("auc", 3, ""), ("macro_f1", 3, ""), ("total_wall_s", 0, " s"),
             ("seconds_per_epoch", 1, " s"), ("evaluation_s", 0, " s"))
    rows = [[label, len(side_values(t, side, "total_wall_s")),
             *(spread_text(side_values(t, side, f), digits, unit) for f, digits, unit in shown),
             spread_text([v / 1024 for v in side_values(t, side, "peak_rss_mib")], 2, " GiB")]
            for side, label in SIDES.items() if side_values(t, side, "total_wall_s")]
    return common.markdown_table(header, rows)


def other_rows(sections: dict, flags) -> list[tuple[dict, list]]:
    """(section, row) for the pipeline, prediction, pages and dashboard memory figures."""
    rows, p, pr, pg = [], sections.get("pipeline"), sections.get("predict"), sections.get("pages")
    if p:
        rows.append((p, [f"input pipeline images/s, ours warm / cold / study's loader{flags(p)}",
                         f"{p['ours_warm']['images_per_s']:.0f} / {p['ours_cold']['images_per_s']:.0f} / "
                         f"{p['seed_loader']['images_per_s']:.0f} ({p['warm_vs_seed']:.1f}x, {p['cold_vs_seed']:.1f}x)",
                         "-", "-"]))
    for name, row in (pr or {}).get("models", {}).items():
        for kind, label, target in (("predict", "prediction", "predict_p95_ms"), ("gradcam", "Grad-CAM", "gradcam_p95_ms")):
            rows.append((pr, [f"{label} p50 / p95, {name} ({row['image_size']} px){flags(pr)}",
                              f"{row[kind]['p50_ms']:.0f} / {row[kind]['p95_ms']:.0f} ms",
                              f"p95 <= {TARGETS[target]} ms", verdict(row[kind]["p95_ms"], TARGETS[target])]))
    for row in (pg or {}).get("pages", []):
        shown = row.get("error") or f"{row['first_visit_s']:.2f} s (rerun {row['rerun_s']:.2f} s)" + (
            f", {len(row['exceptions'])} exception(s)" if row.get("exceptions") else "")
        met = "NO" if "error" in row or row.get("exceptions") else verdict(row["first_visit_s"], TARGETS["page_s"])
        rows.append((pg, [f"page {row['page']}, first visit, {pg['runs_in_store']} runs stored{flags(pg)}", shown,
                          "<= 1.5 s", met]))
    if (pg or {}).get("compare"):
        c = pg["compare"]
        rows.append((pg, [f"{c['page']} with {c['runs_selected']} runs selected", f"{c['seconds']:.2f} s", "<= 1.5 s",
                          verdict(c["seconds"], TARGETS["page_s"])]))
    d = (sections.get("memory") or {}).get("dashboard")
    if d:
        rows.append((sections["memory"], [f"dashboard peak memory after every page ({d['method'].split(';')[0]})",
                                          f"{d['peak_rss_mib'] / 1024:.2f} GiB", "<= 1.5 GiB",
                                          verdict(d["peak_rss_mib"] / 1024, TARGETS["dashboard_peak_gib"])]))
    return rows


def summary(sections: dict) -> list[list]:
    def flags(s):
        return f" ({s['flags_note']})" if s.get("flags_note") else ""

    ok = {name: s for name, s in sections.items() if "error" not in s}
    pairs = [(ok["training"], row) for row in training_rows(ok["training"], flags(ok["training"]))] if "training" in ok else []
    pairs += other_rows(ok, flags)
    pairs += [(s, [f"{name} section", f"failed: {s['error']}", "-", "NO"]) for name, s in sections.items() if "error" in s]
    return [[*row, common.commit_label(section.get("git"))] for section, row in pairs]


def notes(result: dict) -> list[str]:
    found = []
    for name, section in result["sections"].items():
        command = section.get("command")
        found.append(f"{name}: measured {section.get('date', '?')} at commit {common.commit_label(section.get('git'))}"
                     + (f" with {section['flags_note']}" if section.get("flags_note") else "")
                     + (f" by `{command}`" if command and command != result["command"] else ""))
    commits = {common.commit_label(s.get("git")) for s in result["sections"].values()}
    if len(commits) > 1:
        found.append("The rows come from runs at different commits (" + ", ".join(sorted(commits)) + "): each row's "
                     "commit is in the table; only rows of one commit are compared with each other.")
    return found


def training_notes(t: dict) -> list[str]:
    r, run = t["seed_recipe"], t["runs"][0]
    scored = run.get("scored") or ("the last epoch's model, scored on the dev half by a per-epoch callback at its "
                                   "side's threshold rule (0.5 for the study's; ours chosen on validation), that "
                                   "scoring's time subtracted from the wall time")
    return [f"Training: both sides are the product's `python -m cxr_core train --model regularized_cnn` (cold private "
            f"cache: decoding included), ours with its defaults and the study's with `--recipe study` ({r['image_size']} "
            f"px, {r['epochs']} epochs, Adam {r['learning_rate']:g} constant, threshold {r['fixed_threshold']}), the "
            f"same patient split; {repeats_text(t)}, in the order {', '.join(t['order'])}. Wall time runs from the "
            "child's start to its exit; peak memory is its wait4 high-water mark. Dev figures on "
            f"`{t['test_data']}`: {scored}."]


def render(result: dict, full: bool = True) -> str:
    sections = result["sections"]
    lines = [common.provenance(result), "", f"Data: `{result['data']}`. Ours and the study's are measured in the "
             "same run, one after the other, so that load on the machine weighs on both alike.", "",
             common.markdown_table(["figure", "measured", "target", "met", "commit"], summary(sections)), ""]
    t = sections.get("training")
    shown = t and "error" not in t
    if shown:
        lines += [training_table(t), ""]
    found = notes(result) + (training_notes(t) if shown else [])
    if "models" in sections.get("predict", {}):
        found.append("prediction: one 2000x2000 JPEG's bytes, decode + preprocess + predict with the model loaded; "
                     f"Grad-CAM: {sections['predict']['gradcam_what']}; p50/p95 over "
                     f"{sections['predict']['calls']} calls after one warm-up call.")
    lines += [f"- {n}" for n in found]
    if not full:
        lines.append("- Per-run figures and every section's details: `benchmarks/results/speed.json` and `speed.md`.")
    return "\n".join(lines)

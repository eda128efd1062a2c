"""Commands for the study: compare runs (the Compare page), calibration, the Lesson's numbers, an HTML report."""

from __future__ import annotations

import json

from ..config import UserError
from ..store import OWN
from .common import data_arg, store_of, synthetic_note


def cmd_compare(args) -> int:
    from .. import run_tables
    from ..inference import predictions

    store = store_of(args)
    runs = [store.get(run_id) for run_id in args.runs_to_compare]
    evaluations = {}
    for run in runs:
        evaluation = run.evaluation(args.split, args.on)
        if evaluation is None:
            how = "" if args.on == OWN else " --data FOLDER"
            raise UserError(f"run {run.run_id} has no {args.split} evaluation on {args.on}; "
                            f"run `python -m cxr_core evaluate {run.run_id} --split {args.split}{how}`")
        evaluations[run.run_id] = evaluation
    table = run_tables.metrics_table(evaluations)
    synthetic = [run.run_id for run in runs if run.status.get("synthetic")]
    report = {"split": args.split, "on": args.on, "metrics": table.to_dict(orient="records"), "synthetic": synthetic}
    tables = [predictions(run.run_id, args.split, store, args.on) for run in runs]
    if len(runs) == 2 and all(t is not None for t in tables):
        thresholds = [evaluations[r.run_id]["threshold"] for r in runs]
        mcnemar = run_tables.mcnemar_between(*tables, *thresholds, runs[0].run_id, runs[1].run_id)
        if mcnemar is not None:
            report["mcnemar"] = mcnemar
    if all(t is not None for t in tables) and not run_tables.same_images(tables):
        report["warning"] = "the runs were evaluated on different images; the comparison is not like for like"
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    print(run_tables.metrics_text(table).to_string(index=False))  # value [95% interval], as on the page
    if "mcnemar" in report:
        print("\nMcNemar: " + report["mcnemar"]["reading"])
    if "warning" in report:
        print("\nwarning: " + report["warning"])
    if synthetic:
        print(f"\nSYNTHETIC demo data: {', '.join(synthetic)} trained on the synthetic demo set; "
              "these numbers say nothing about real X-rays.")
    return 0


def cmd_calibration(args) -> int:
    from .. import calibration

    store = store_of(args)
    source = OWN
    if args.data:
        from ..inference import evaluate_run
        from ..quiet import import_tensorflow

        if not args.verbose:
            import_tensorflow()  # scoring a folder runs the model; stored predictions do not
        source = evaluate_run(args.run, args.split, store, args.data)["source"]
    report = calibration.for_run(args.run, store, args.split, source)
    report["synthetic"] = bool(store.get(args.run).status.get("synthetic"))
    if args.json:
        print(json.dumps(report))
        return 0
    from ..run_tables import evaluation_label

    print(f"run {args.run} on the {evaluation_label((args.split, source))} ({report['n']} images)"
          + synthetic_note(store, args.run))
    print(f"  ECE   {report['ece']:.3f}  (after temperature scaling {report['ece_scaled']:.3f})")
    print(f"  Brier {report['brier']:.3f}  (after temperature scaling {report['brier_scaled']:.3f})")
    print(f"  temperature {report['temperature']:.3f}, fitted on the run's validation predictions")
    print("  bin          images  predicted  observed")
    bins = report["bins"]
    for low, high, count, predicted, observed in zip(bins["lower"], bins["upper"], bins["count"],
                                                     bins["mean_predicted"], bins["observed"]):
        print(f"  {low:.1f}-{high:.1f}    {count:>6}  {predicted:9.3f}  {observed:8.3f}")
    return 0


def _lesson_check(args) -> int:
    from .. import lesson_prep

    rows = lesson_prep.check(data_arg(args.data), store_of(args), f" --data {args.data}" if args.data else "")
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        line = f"step {row['step']:<4} {row['state']:<8} {row['title']}: {row['detail']}"
        print(line + (f"\n              fix: {row['command']}" if row["command"] else ""))
    return 0


def _lesson_prepare(args) -> int:
    from .. import lesson_prep

    overrides = {k: v for k, v in (("epochs", args.epochs), ("image_size", args.image_size)) if v}
    done = lesson_prep.prepare(data_arg(args.data), store_of(args), steps=args.step, overrides=overrides,
                               weights=args.weights)
    print(f"queued {len(done['queued'])} training runs and {len(done['scorings'])} scorings on the background worker"
          + (": " + ", ".join(done["queued"] + done["scorings"]) if done["queued"] or done["scorings"] else
             " (nothing was missing)"))
    for note in done["notes"]:
        print(f"note: {note}")
    print("follow them with `python -m cxr_core lesson --check` (or `python -m cxr_core runs`)")
    return 0


def cmd_lesson(args) -> int:
    from .. import data
    from ..lesson import summary

    if args.check:
        return _lesson_check(args)
    if args.prepare:
        return _lesson_prepare(args)
    scan = data.scan_folder(data_arg(args.data))
    result = summary(scan, data.assign_splits(scan.manifest), store_of(args), prevalence=args.prevalence)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_report(args) -> int:
    from ..report import build_report

    html = build_report(args.runs_to_report, store_of(args), split=args.split, source=args.on)
    from pathlib import Path

    Path(args.out).expanduser().write_text(html, encoding="utf-8")
    print(args.out)
    return 0


def register(add, runs, as_json) -> None:
    """Add these commands to the parser (cli.parser calls it)."""
    p = add("compare", cmd_compare, "what the Compare page shows: metrics with intervals, McNemar for two runs", runs, as_json)
    p.add_argument("runs_to_compare", nargs="+", metavar="RUN", help="run ids, as `runs` lists them")
    p.add_argument("--split", default="test", choices=("val", "test"), help="which split's evaluation")
    p.add_argument("--on", default=OWN, metavar="SOURCE",
                   help="which evaluation: own (each run's own split, the default) or a folder key from `runs --json`")

    p = add("calibration", cmd_calibration, "ECE, Brier, reliability bins and a temperature fitted on validation", runs, as_json)
    p.add_argument("run", metavar="RUN", help="a run id, as `runs` lists them")
    p.add_argument("--split", default="test", choices=("val", "test"), help="which split's predictions")
    p.add_argument("--data", help="score this labelled folder first (as evaluate --data) and report on it")

    p = add("lesson", cmd_lesson, "the Lesson page's numbers as JSON; --check: is the class ready; --prepare: queue "
            "what is missing", runs, as_json)
    p.add_argument("--data", help="Kaggle-layout folder (default: $CXR_DATA_DIR, else the synthetic demo set)")
    p.add_argument("--prevalence", type=float, default=0.05, help="for PPV and NPV (default 0.05)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true",
                      help="each step as ready, training (with time left) or missing (with the command that fixes it)")
    what.add_argument("--prepare", action="store_true",
                      help="queue every run and scoring the Lesson needs that is missing, on the background worker")
    p.add_argument("--step", type=int, action="append", choices=range(1, 10), metavar="N",
                   help="--prepare: only what step N needs (repeatable; default: every step)")
    p.add_argument("--weights", help="--prepare: where the transfer models start: imagenet (default; needs a network "
                                     "once), none, or a local weights file")
    p.add_argument("--epochs", type=int, help="--prepare: a quick try-out with fewer epochs (the figures need the defaults)")
    p.add_argument("--image-size", type=int, help="--prepare: a quick try-out at this size in pixels")

    p = add("report", cmd_report, "one self-contained HTML report on runs (opens offline)", runs)
    p.add_argument("runs_to_report", nargs="+", metavar="RUN", help="run ids, as `runs` lists them")
    p.add_argument("--split", default="test", choices=("val", "test"), help="which split's evaluation")
    p.add_argument("--on", default=OWN, metavar="SOURCE", help="which evaluation: own or a folder key from `runs --json`")
    p.add_argument("--out", required=True, help="the HTML file to write")


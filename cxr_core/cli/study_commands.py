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


def cmd_lesson(args) -> int:
    from .. import data
    from ..lesson import summary

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

    p = add("lesson", cmd_lesson, "the Lesson page's numbers for a data set and its runs, as JSON", runs)
    p.add_argument("--data", help="Kaggle-layout folder (default: $CXR_DATA_DIR, else the synthetic demo set)")
    p.add_argument("--prevalence", type=float, default=0.05, help="for PPV and NPV (default 0.05)")

    p = add("report", cmd_report, "one self-contained HTML report on runs (opens offline)", runs)
    p.add_argument("runs_to_report", nargs="+", metavar="RUN", help="run ids, as `runs` lists them")
    p.add_argument("--split", default="test", choices=("val", "test"), help="which split's evaluation")
    p.add_argument("--on", default=OWN, metavar="SOURCE", help="which evaluation: own or a folder key from `runs --json`")
    p.add_argument("--out", required=True, help="the HTML file to write")


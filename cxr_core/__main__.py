"""The command line: everything the dashboard shows, from a terminal.

    python -m cxr_core info      --data DIR [--json]
    python -m cxr_core train     --data DIR --model NAME [--epochs N] [--image-size PX]
                                 [--weights imagenet|none|PATH] [--seed S] [--runs DIR]
                                 [--zoom-in F] [--patience N] [--label-smoothing F]
                                 [--threshold-rule sensitivity|youden]
    python -m cxr_core evaluate  RUN --split test [--data DIR] [--occlude lungs|outside] [--runs DIR] [--json]
    python -m cxr_core predict   RUN FILE... [--runs DIR] [--json]
                                 [--heatmap OUT.png [--randomized] [--heatmap-size PX]]   (one FILE)
    python -m cxr_core calibration RUN [--split test] [--data DIR] [--json]
                                 (ECE, Brier, reliability bins, temperature fitted on validation)
    python -m cxr_core report    RUN RUN... [--split test] [--on SOURCE] --out report.html
                                 (one self-contained HTML file: settings, data, intervals, figures)
    python -m cxr_core lesson    [--data DIR] [--prevalence P] [--runs DIR]   (the Lesson page's numbers, JSON)
    python -m cxr_core runs      [--runs DIR] [--json]
    python -m cxr_core demo-data [--out DIR]
    python -m cxr_core download  [--source kaggle|URL|ZIP] [--out DIR] [--sha256 HEX]
                                 (the real data set; prints the CXR_DATA_DIR line last)
    python -m cxr_core explore   --data DIR [--json]     (what the Dataset page shows)
    python -m cxr_core compare   RUN RUN... [--split test] [--on SOURCE] [--json]   (what the Compare page shows)
    python -m cxr_core worker    [--runs DIR]        (trains queued runs, then queued evaluations)
    python -m cxr_core cancel    RUN [--runs DIR]
    python -m cxr_core --verbose COMMAND ...         (with TensorFlow's own start-up lines)

Errors a person can fix print one line to stderr and exit 2; `predict` exits 1
when any file could not be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .config import MODEL_NAMES, THRESHOLD_RULES, UserError, configured_data_dir, default_settings
from .store import OWN


def _data_arg(value: str | None):
    if value:
        return value
    configured = configured_data_dir()
    if configured:
        return configured
    from .demo import ensure_demo_dataset

    return ensure_demo_dataset()


def _store(args):
    from .store import RunStore

    return RunStore(args.runs)


def cmd_info(args) -> int:
    from . import data, explore

    scan = data.scan_folder(_data_arg(args.data))
    split = data.assign_splits(scan.manifest, seed=args.seed)
    summary = data.split_summary(split)
    info = {
        **explore.dataset_summary(scan),  # what the Home page shows
        "splits": summary.to_dict(orient="records"),
        "patient_overlap": data.patient_overlap(split),
        "leakage": data.leakage_report(split),
        "seed": args.seed,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['root']}{'  (SYNTHETIC demo data)' if scan.synthetic else ''}")
    print(f"{info['images']} images of {info['patients']} patients: "
          + ", ".join(f"{k} {v}" for k, v in sorted(info["classes"].items())))
    print("official folders: " + ", ".join(f"{k} {v}" for k, v in info["official_splits"].items() if v))
    if scan.skipped:
        print("skipped: " + ", ".join(f"{v} {k}" for k, v in scan.skipped.items()))
    print(f"\nsplits used for training (by patient, seed {args.seed}):")
    print(summary.to_string(index=False))
    print("patients in two splits (leakage check): " + "; ".join(f"{r['pair']}: {r['verdict']}" for r in info["leakage"]))
    if not all(r["exact"] for r in info["leakage"] if r["shared_ids"]):
        print(data.OVERLAP_UNCERTAIN)
    return 0


def cmd_train(args) -> int:
    from . import jobs

    settings = default_settings(args.model)
    for field in ("epochs", "image_size", "batch_size", "learning_rate", "weights", "seed"):
        value = getattr(args, field)
        if value is not None:
            setattr(settings, field, value)
    if args.no_augment:
        settings.augment = False
    if args.no_class_weights:
        settings.class_weighting = False
    if args.threshold_rule:
        settings.threshold_rule = args.threshold_rule
    if args.zoom_in is not None:
        settings.zoom_in = args.zoom_in
    if args.patience is not None:
        settings.early_stopping_patience = args.patience
    if args.label_smoothing is not None:
        settings.label_smoothing = args.label_smoothing
    if settings.epochs < 1 or settings.image_size < 32 or settings.batch_size < 1:
        raise UserError("--epochs and --batch-size must be at least 1, --image-size at least 32")
    if settings.early_stopping_patience < 0 or not 0 <= settings.label_smoothing < 0.5 or not 0 <= settings.zoom_in < 1:
        raise UserError("--patience must be at least 0, --label-smoothing between 0 and 0.5, --zoom-in between 0 and 1")
    if settings.weights not in ("imagenet", "none") and not os.path.isfile(os.path.expanduser(settings.weights)):
        raise UserError(f"--weights {settings.weights}: no such file; pass imagenet, none, or the path to a weights file")
    store = _store(args)
    data_dir = _data_arg(args.data)
    from . import data

    data.scan_folder(data_dir)  # a missing folder, no images, one class: fail before creating a run folder
    with jobs.worker_lock(store):
        import keras  # noqa: F401  TensorFlow's slow import, before the run exists (a Ctrl-C here leaves nothing)
        run_id = jobs.submit(settings, data_dir, store, start=False)
        print(f"run {run_id}: {settings.model}, {settings.epochs} epochs at {settings.image_size}px", flush=True)
        state = jobs.run_one(run_id, store, echo=lambda line: print(line, flush=True))
    if jobs.queued(store) or jobs.queued_evaluations(store):
        jobs.spawn_worker(store)  # runs queued from the dashboard while this one held the lock
    print(run_id)
    return 0 if state == "done" else 1


def cmd_evaluate(args) -> int:
    from .evaluate import with_interval
    from .inference import evaluate_run

    result = evaluate_run(args.run, args.split, _store(args), args.data, recompute=args.recompute,
                          occlusion=args.occlude)
    if args.json:
        print(json.dumps(result))
        return 0
    tn, fp = result["confusion_matrix"][0]
    fn, tp = result["confusion_matrix"][1]
    ci = result.get("ci95", {})

    def show(key):
        return with_interval(result.get(key), ci.get(key))

    from .explore import evaluation_label

    where = evaluation_label((result["split"], result.get("source", OWN)))
    print(f"run {result['run']} on the {where} ({result['n']} images), threshold {result['threshold']:.3f}"
          + _synthetic_note(_store(args), result["run"]))
    for key in ("accuracy", "sensitivity", "specificity", "macro_f1", "auc"):
        print(f"  {key:<12} {show(key)}")
    print(f"  confusion    TN {tn}  FP {fp}  FN {fn}  TP {tp}")
    return 0


def _synthetic_note(store, run_id: str) -> str:
    """A label for output about a run trained on the synthetic demo set; empty otherwise."""
    try:
        synthetic = store.get(run_id).status.get("synthetic")
    except UserError:
        return ""
    return "  [trained on SYNTHETIC demo data: says nothing about real X-rays]" if synthetic else ""


def cmd_predict(args) -> int:
    from .inference import load_run, predict_files

    if args.heatmap and len(args.files) != 1:
        raise UserError(f"--heatmap writes one image: pass one FILE, not {len(args.files)}")
    if (args.randomized or args.heatmap_size) and not args.heatmap:
        raise UserError("--randomized and --heatmap-size go with --heatmap OUT.png")
    if args.heatmap_size is not None and not 16 <= args.heatmap_size <= 4096:
        raise UserError(f"--heatmap-size {args.heatmap_size}: give a side from 16 to 4096 pixels")
    store = _store(args)
    loaded = load_run(args.run, store)
    results = predict_files(loaded, args.files)
    if store.get(args.run).status.get("synthetic") and not args.json:
        print(_synthetic_note(store, args.run).strip(), file=sys.stderr)
    if args.heatmap and "error" not in results[0]:
        from .explain import write_heatmap

        write_heatmap(loaded, args.files[0], args.heatmap, label=results[0]["label"], randomized=args.randomized,
                      size=args.heatmap_size)
    for result in results:
        if args.json:
            keys = ("file", "label", "probability", "in_distribution", "warning", "error")
            print(json.dumps({k: result[k] for k in keys if k in result}))
        elif "error" in result:
            print(f"error: {result['error']}", file=sys.stderr)
        else:
            print(f"{result['file']}: {result['label']} (P(pneumonia) {result['probability']:.3f}, threshold {result['threshold']:.3f})"
                  + (f" - NOT LIKE THE TRAINING X-RAYS, do not trust this label: {result['warning']}"
                     if result["in_distribution"] is False else ""))
    return 1 if any("error" in r for r in results) else 0


def cmd_runs(args) -> int:
    runs = _store(args).list()
    rows = []
    for run in runs:
        evaluation = run.evaluation("test") or {}
        rows.append({
            "run": run.run_id, "model": run.model, "state": run.state,
            "epoch": run.status.get("epoch"), "epochs": run.settings.get("epochs"),
            "auc": evaluation.get("auc"), "accuracy": evaluation.get("accuracy"), "error": run.error,
            "evaluated_on": run.evaluation_sources("test"), "synthetic": bool(run.status.get("synthetic")),
        })
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"no runs in {_store(args).root}; start one with `python -m cxr_core train --model regularized_cnn`")
    for row in rows:
        metrics = f"  test AUC {row['auc']:.3f}  accuracy {row['accuracy']:.3f}" if row["auc"] is not None else ""
        print(f"{row['run']}  {row['model']:<22} {row['state']:<11}{metrics}{'  ' + row['error'] if row['error'] else ''}"
              + ("  (SYNTHETIC demo data)" if row["synthetic"] else ""))
    return 0


def cmd_demo_data(args) -> int:
    from .demo import ensure_demo_dataset, write_demo_dataset

    path = write_demo_dataset(args.out) if args.out else ensure_demo_dataset()
    print(path)
    return 0


def cmd_download(args) -> int:
    from .download import download, export_line

    root = download(args.source, args.out, sha256=args.sha256, echo=lambda line: print(line, flush=True))
    print(export_line(root))
    return 0


def cmd_explore(args) -> int:
    from . import data, explore

    scan = data.scan_folder(_data_arg(args.data))
    split = data.assign_splits(scan.manifest, seed=args.seed)
    sizes = explore.image_size_table(scan.manifest, n=args.sample)
    report = {
        "summary": explore.dataset_summary(scan),
        "class_balance": explore.class_balance(split).to_dict(orient="records"),
        "images_per_patient": explore.images_per_patient(split).to_dict(orient="records"),
        "patient_overlap": data.patient_overlap(split),
        "naive_split_leakage": explore.naive_split_leakage(scan.manifest),
        "image_sizes": sizes.describe().round(2).to_dict() if not sizes.empty else {},
    }
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"{report['summary']['root']}{'  (SYNTHETIC demo data)' if scan.synthetic else ''}")
    print("\nclass balance (always answering PNEUMONIA scores the last column):")
    print(explore.class_balance(split).to_string(index=False))
    print("\nimages per patient:")
    print(explore.images_per_patient(split).to_string(index=False))
    print("\npatients in two splits, by patient (ours): " + ", ".join(f"{k} {v}" for k, v in report["patient_overlap"].items()))
    print("patients in two splits, if split by image at random: " + ", ".join(f"{k} {v}" for k, v in report["naive_split_leakage"].items()))
    if not sizes.empty:
        print(f"\nimage sizes (sample of {len(sizes)}):")
        print(sizes.describe().round(2).to_string())
    return 0


def cmd_compare(args) -> int:
    from . import explore
    from .inference import predictions

    store = _store(args)
    runs = [store.get(run_id) for run_id in args.runs_to_compare]
    evaluations = {}
    for run in runs:
        evaluation = run.evaluation(args.split, args.on)
        if evaluation is None:
            how = "" if args.on == OWN else " --data FOLDER"
            raise UserError(f"run {run.run_id} has no {args.split} evaluation on {args.on}; run `python -m cxr_core evaluate {run.run_id} --split {args.split}{how}`")
        evaluations[run.run_id] = evaluation
    table = explore.metrics_table(evaluations)
    synthetic = [run.run_id for run in runs if run.status.get("synthetic")]
    report = {"split": args.split, "on": args.on, "metrics": table.to_dict(orient="records"), "synthetic": synthetic}
    tables = [predictions(run.run_id, args.split, store, args.on) for run in runs]
    if len(runs) == 2 and all(t is not None for t in tables):
        thresholds = [evaluations[r.run_id]["threshold"] for r in runs]
        mcnemar = explore.mcnemar_between(*tables, *thresholds, runs[0].run_id, runs[1].run_id)
        if mcnemar is not None:
            report["mcnemar"] = mcnemar
    if all(t is not None for t in tables) and not explore.same_images(tables):
        report["warning"] = "the runs were evaluated on different images; the comparison is not like for like"
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    print(table.to_string(index=False))
    if "mcnemar" in report:
        print("\nMcNemar: " + report["mcnemar"]["reading"])
    if "warning" in report:
        print("\nwarning: " + report["warning"])
    if synthetic:
        print(f"\nSYNTHETIC demo data: {', '.join(synthetic)} trained on the synthetic demo set; "
              "these numbers say nothing about real X-rays.")
    return 0


def cmd_calibration(args) -> int:
    from . import calibration

    store = _store(args)
    source = OWN
    if args.data:
        from .inference import evaluate_run
        from .quiet import import_tensorflow

        if not args.verbose:
            import_tensorflow()  # scoring a folder runs the model; stored predictions do not
        source = evaluate_run(args.run, args.split, store, args.data)["source"]
    report = calibration.for_run(args.run, store, args.split, source)
    report["synthetic"] = bool(store.get(args.run).status.get("synthetic"))
    if args.json:
        print(json.dumps(report))
        return 0
    from .explore import evaluation_label

    print(f"run {args.run} on the {evaluation_label((args.split, source))} ({report['n']} images)"
          + _synthetic_note(store, args.run))
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
    from . import data
    from .lesson import summary

    scan = data.scan_folder(_data_arg(args.data))
    result = summary(scan, data.assign_splits(scan.manifest), _store(args), prevalence=args.prevalence)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_report(args) -> int:
    from .report import build_report

    html = build_report(args.runs_to_report, _store(args), split=args.split, source=args.on)
    from pathlib import Path

    Path(args.out).expanduser().write_text(html, encoding="utf-8")
    print(args.out)
    return 0


def cmd_worker(args) -> int:
    from . import jobs

    jobs.yield_to_the_dashboard()
    jobs.work(_store(args), echo=lambda line: print(line, flush=True))
    return 0


def cmd_cancel(args) -> int:
    from . import jobs

    print(jobs.cancel(args.run, _store(args)))
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line too, like every other error (subcommands inherit this)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    root = _Parser(prog="python -m cxr_core", description="Chest X-ray pneumonia study: data, training, evaluation.")
    root.add_argument("--verbose", action="store_true", help="show TensorFlow's own start-up and log lines")
    sub = root.add_subparsers(dest="command", required=True)

    # Options many commands share, declared once (argparse parents).
    runs = argparse.ArgumentParser(add_help=False)
    runs.add_argument("--runs", help="run store folder (default: $CXR_RUNS_DIR or ./runs)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of text")

    def add(name, func, help_text, *parents):
        p = sub.add_parser(name, help=help_text, parents=list(parents))
        p.set_defaults(func=func)
        return p

    p = add("info", cmd_info, "describe a data folder and the splits training would use", as_json)
    p.add_argument("--data", help="Kaggle-layout folder (default: $CXR_DATA_DIR, else the synthetic demo set)")
    p.add_argument("--seed", type=int, default=42)

    p = add("train", cmd_train, "train one model in this process; prints the run id last", runs)
    p.add_argument("--data")
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--weights", help="transfer models: imagenet, none, or a local weights file")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--no-class-weights", action="store_true")
    p.add_argument("--zoom-in", type=float, help="largest zoom-in of the training augmentation (0.3 = 30%%)")
    p.add_argument("--patience", type=int, help="early stopping: epochs without a better validation AUC (0 = off)")
    p.add_argument("--label-smoothing", type=float, help="soften the 0/1 targets by this much (0 = off)")
    p.add_argument("--threshold-rule", choices=THRESHOLD_RULES,
                   help="how the threshold is chosen on validation (default: the model's recipe)")

    p = add("evaluate", cmd_evaluate, "metrics of a run on a split", runs, as_json)
    p.add_argument("run")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--data", help="evaluate on another labelled folder (ROOT/test/{NORMAL,PNEUMONIA} or "
                   "ROOT/{NORMAL,PNEUMONIA}); stored beside the run's own evaluation")
    p.add_argument("--recompute", action="store_true")
    p.add_argument("--occlude", choices=("lungs", "outside"),
                   help="shortcut test: black out the lung fields (a fixed central box), or all but them; "
                        "stored apart from the plain evaluation")

    p = add("predict", cmd_predict, "predict image files (JPEG, PNG, DICOM, ...)", runs, as_json)
    p.add_argument("run")
    p.add_argument("files", nargs="+")
    p.add_argument("--heatmap", metavar="OUT.png", help="write the Grad-CAM overlay of the one FILE to this PNG")
    p.add_argument("--randomized", action="store_true",
                   help="the heat map of a copy of the model with random weights (Adebayo et al.'s sanity check)")
    p.add_argument("--heatmap-size", type=int, metavar="PX", help="side of the PNG (default: the model's input size)")

    p = add("calibration", cmd_calibration, "ECE, Brier, reliability bins and a temperature fitted on validation", runs, as_json)
    p.add_argument("run")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--data", help="score this labelled folder first (as evaluate --data) and report on it")

    p = add("lesson", cmd_lesson, "the Lesson page's numbers for a data set and its runs, as JSON", runs)
    p.add_argument("--data")
    p.add_argument("--prevalence", type=float, default=0.05, help="for PPV and NPV (default 0.05)")

    p = add("report", cmd_report, "one self-contained HTML report on runs (opens offline)", runs)
    p.add_argument("runs_to_report", nargs="+", metavar="RUN")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--on", default=OWN, metavar="SOURCE", help="which evaluation: own or a folder key from `runs --json`")
    p.add_argument("--out", required=True, help="the HTML file to write")

    p = add("runs", cmd_runs, "list runs", runs, as_json)

    p = add("demo-data", cmd_demo_data, "write the synthetic demo data set")
    p.add_argument("--out")

    p = add("download", cmd_download, "fetch the Kermany data set (CC BY 4.0) in Kaggle layout; prints the CXR_DATA_DIR line last")
    p.add_argument("--source", default="kaggle", help="kaggle (default, with kagglehub), an http(s) URL of a zip, or a local zip")
    p.add_argument("--out", help="folder to create (default: ~/data/chest_xray)")
    p.add_argument("--sha256", help="expected SHA-256 of the zip at --source URL")

    p = add("explore", cmd_explore, "what the Dataset page shows: balance, patients, leakage, image sizes", as_json)
    p.add_argument("--data")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--sample", type=int, default=300, help="images whose headers are read for sizes")

    p = add("compare", cmd_compare, "what the Compare page shows: metrics with intervals, McNemar for two runs", runs, as_json)
    p.add_argument("runs_to_compare", nargs="+", metavar="RUN")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--on", default=OWN, metavar="SOURCE",
                   help="which evaluation: own (each run's own split, the default) or a folder key from `runs --json`")

    p = add("worker", cmd_worker, "train queued runs until none are left", runs)

    p = add("cancel", cmd_cancel, "stop a queued or running run", runs)
    p.add_argument("run")
    return root


# Commands that load TensorFlow (evaluate --occlude and predict --heatmap among them); the others stay
# light and never import it. calibration loads it only to score a folder (--data), and does so itself;
# the worker imports it quietly only once there is work, so an idle one stays light.
_TENSORFLOW_COMMANDS = {"train", "evaluate", "predict"}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.verbose:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # the worker it may start inherits it
        elif args.command in _TENSORFLOW_COMMANDS:
            from .quiet import import_tensorflow

            import_tensorflow()  # its C++ start-up lines read like failures to a newcomer
        return args.func(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # an unwritable run store, a full disk: say so, no traceback
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: {error.strerror or error}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Commands about runs: train, score and use them, list them, and the background worker."""

from __future__ import annotations

import json
import os
import sys

from .. import registry
from ..config import METRICS, THRESHOLD_RULES, UserError
from ..store import OWN, RunState
from .common import data_arg, store_of, synthetic_note


def cmd_train(args) -> int:
    from .. import jobs

    settings = registry.default_settings(args.model, args.recipe)
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
    if settings.weights not in tuple(registry.Weights) and not os.path.isfile(os.path.expanduser(settings.weights)):
        raise UserError(f"--weights {settings.weights}: no such file; pass imagenet, none, or the path to a weights file")
    store = store_of(args)
    data_dir = data_arg(args.data)
    from .. import data

    data.scan_folder(data_dir)  # a missing folder, no images, one class: fail before creating a run folder
    if args.ensemble is not None:
        from ..ensemble import ensemble_settings

        ensemble_settings(settings, args.ensemble)  # a bad --ensemble fails before TensorFlow's import
    with jobs.worker_lock(store):
        from ..quiet import import_tensorflow

        import_tensorflow()  # slow and quiet, before the run exists (a Ctrl-C here leaves nothing)
        if args.ensemble is not None:
            from .. import ensemble

            run_id = ensemble.submit(settings, args.ensemble, data_dir, store, start=False)
        else:
            run_id = jobs.submit(settings, data_dir, store, start=False)
        members = f"an ensemble of {args.ensemble} x " if args.ensemble else ""
        print(f"run {run_id}: {members}{settings.model} ({settings.recipe} recipe), {settings.epochs} epochs at "
              f"{settings.image_size}px", flush=True)
        state = jobs.run_one(run_id, store, echo=lambda line: print(line, flush=True))
    if jobs.queued(store) or jobs.queued_evaluations(store):
        jobs.spawn_worker(store)  # runs queued from the dashboard while this one held the lock
    print(run_id)
    return 0 if state == RunState.DONE else 1


def cmd_evaluate(args) -> int:
    from ..evaluate import with_interval
    from ..inference import evaluate_run

    result = evaluate_run(args.run, args.split, store_of(args), args.data, recompute=args.recompute,
                          occlusion=args.occlude, threshold_from=args.threshold_from)
    if args.json:
        print(json.dumps(result))
        return 0
    tn, fp = result["confusion_matrix"][0]
    fn, tp = result["confusion_matrix"][1]
    ci = result.get("ci95", {})

    def show(key):
        return with_interval(result.get(key), ci.get(key))

    from ..run_tables import evaluation_label

    where = evaluation_label((result["split"], result.get("source", OWN)), [store_of(args).get(args.run)])
    print(f"run {result['run']} on the {where} ({result['n']} images), threshold {result['threshold']:.3f} "
          f"from {result.get('threshold_source', 'validation')}"
          + synthetic_note(store_of(args), result["run"]))
    for key in METRICS:
        print(f"  {key:<12} {show(key)}")
    print(f"  confusion    TN {tn}  FP {fp}  FN {fn}  TP {tp}")
    return 0


def cmd_predict(args) -> int:
    from ..inference import load_run, predict_files, shown_label

    if args.heatmap and len(args.files) != 1:
        raise UserError(f"--heatmap writes one image: pass one FILE, not {len(args.files)}")
    if (args.randomized or args.heatmap_size) and not args.heatmap:
        raise UserError("--randomized and --heatmap-size go with --heatmap OUT.png")
    if args.heatmap_size is not None and not 16 <= args.heatmap_size <= 4096:
        raise UserError(f"--heatmap-size {args.heatmap_size}: give a side from 16 to 4096 pixels")
    store = store_of(args)
    loaded = load_run(args.run, store)
    results = predict_files(loaded, args.files)
    if store.get(args.run).status.get("synthetic") and not args.json:
        print(synthetic_note(store, args.run).strip(), file=sys.stderr)
    if args.heatmap and "error" not in results[0]:
        from ..explain import write_heatmap

        try:
            write_heatmap(loaded, args.files[0], args.heatmap, label=results[0]["label"], randomized=args.randomized,
                          size=args.heatmap_size)
        except ValueError as error:  # a model with nothing to look inside (an imported SavedModel) says why
            raise UserError(f"no heat map: {error}") from None
    for result in results:
        if args.json:
            keys = ("file", "label", "probability", "in_distribution", "warning", "error")
            print(json.dumps({k: result[k] for k in keys if k in result}))
        elif "error" in result:
            print(f"error: {result['error']}", file=sys.stderr)
        else:
            print(f"{result['file']}: {shown_label(result)} (P(pneumonia) {result['probability']:.3f}, threshold "
                  f"{result['threshold']:.3f})" + (f" - not like the training X-rays ({result['warning']}): the model's "
                                                   f"call, {result['label']}, is not to be trusted"
                                                   if result["in_distribution"] is False else ""))
    return 1 if any("error" in r for r in results) else 0


def cmd_runs(args) -> int:
    from ..run_tables import run_records

    rows = run_records(store_of(args).list())
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"no runs in {store_of(args).root}; start one with `python -m cxr_core train --model regularized_cnn`")
    for row in rows:
        metrics = f"  test AUC {row['auc']:.3f}  accuracy {row['accuracy']:.3f}" if row["auc"] is not None else ""
        progress = f"  {row['progress']}" if row["progress"] else ""
        recipe = {registry.Recipe.STUDY: "  (study recipe)", "imported": "  (imported)",
                  "ensemble": "  (ensemble)"}.get(row["recipe"], "")
        print(f"{row['run']}  {row['model']:<22} {row['state']:<11}{metrics}{progress}{recipe}"
              f"{'  ' + row['error'] if row['error'] else ''}" + ("  (SYNTHETIC demo data)" if row["synthetic"] else ""))
    return 0


def cmd_recipes(args) -> int:
    """Every model's settings under each recipe, and what the study recipe assumes where the study is silent."""
    table = {name: {recipe: registry.default_settings(name, recipe).to_dict() for recipe in registry.Recipe}
             for name in registry.names()}
    if args.json:
        print(json.dumps({"models": table, "recipes": {str(k): v for k, v in registry.RECIPE_TEXT.items()},
                          "study_notes": list(registry.STUDY_NOTES)}))
        return 0
    for recipe, text in registry.RECIPE_TEXT.items():
        print(f"{recipe}: {text}")
    print("\nThe study's recipe, where the study is silent:")
    for note in registry.STUDY_NOTES:
        print(f"  - {note}")
    shown = ("image_size", "epochs", "learning_rate", "lr_schedule", "early_stopping_patience", "class_weighting",
             "augment", "threshold_rule", "weights")
    for name, recipes in table.items():
        print(f"\n{name}")
        for recipe, settings in recipes.items():
            print(f"  {recipe:<9} " + ", ".join(f"{k} {settings[k]}" for k in shown))
    return 0


def cmd_worker(args) -> int:
    from .. import jobs

    jobs.yield_to_the_dashboard()
    jobs.work(store_of(args), echo=lambda line: print(line, flush=True))
    return 0


def cmd_cancel(args) -> int:
    from .. import jobs

    print(jobs.cancel(args.run, store_of(args)))
    return 0


def register(add, runs, as_json) -> None:
    """Add these commands to the parser (cli.parser calls it)."""
    p = add("train", cmd_train, "train one model in this process; prints the run id last", runs)
    p.add_argument("--data", help="Kaggle-layout folder (default: $CXR_DATA_DIR, else the synthetic demo set)")
    p.add_argument("--model", required=True, choices=registry.names(), help="one of the registered models")
    p.add_argument("--recipe", default=registry.Recipe.IMPROVED, choices=tuple(registry.Recipe),
                   help="improved: ours (the default); study: the seed study's recipe (180 px, 10 epochs, "
                        "constant Adam 1e-3, no early stopping, no class weights, threshold 0.5); `recipes` lists "
                        "both. Other flags change the recipe's settings")
    p.add_argument("--epochs", type=int, help="at most this many epochs (default: the model's recipe)")
    p.add_argument("--image-size", type=int, metavar="PX", help="side of the square input (default: the model's recipe)")
    p.add_argument("--batch-size", type=int, help="images per batch (default: the model's recipe)")
    p.add_argument("--learning-rate", type=float, help="Adam's learning rate (default: the model's recipe)")
    p.add_argument("--weights", help="transfer models: imagenet, none, or a local weights file")
    p.add_argument("--seed", type=int, help="draws the patient-grouped split and the initial weights (default 42)")
    p.add_argument("--no-augment", action="store_true", help="train without flip, rotation and zoom augmentation")
    p.add_argument("--no-class-weights", action="store_true", help="do not weight the classes by inverse frequency")
    p.add_argument("--zoom-in", type=float, help="largest zoom-in of the training augmentation (0.3 = 30%%)")
    p.add_argument("--patience", type=int, help="early stopping: epochs without a better validation AUC (0 = off)")
    p.add_argument("--label-smoothing", type=float, help="soften the 0/1 targets by this much (0 = off)")
    p.add_argument("--threshold-rule", choices=THRESHOLD_RULES,
                   help="how the threshold is chosen on validation (default: the model's recipe)")
    p.add_argument("--ensemble", type=int, metavar="K",
                   help="train K members on one patient split with seeds S, S+1, ... and store their mean as "
                        "one run (the run id printed last is the ensemble's)")

    p = add("evaluate", cmd_evaluate, "metrics of a run on a split", runs, as_json)
    p.add_argument("run", metavar="RUN", help="a run id, as `runs` lists them")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="which split to score")
    p.add_argument("--data", help="evaluate on another labelled folder (ROOT/test/{NORMAL,PNEUMONIA} or "
                   "ROOT/{NORMAL,PNEUMONIA}); stored beside the run's own evaluation")
    p.add_argument("--recompute", action="store_true", help="score again instead of printing the stored result")
    p.add_argument("--occlude", choices=("lungs", "outside"),
                   help="shortcut test: black out the lung fields (a fixed central box), or all but them; "
                        "stored apart from the plain evaluation")
    p.add_argument("--threshold-from", metavar="CAL_DIR",
                   help="site calibration: score at the threshold that meets the run's target sensitivity on "
                        "this labelled folder (CAL_DIR/test/{NORMAL,PNEUMONIA} or CAL_DIR/{NORMAL,PNEUMONIA}) "
                        "instead of the validation threshold; refused when it shares images with the scored "
                        "folder; stored as its own evaluation")

    p = add("predict", cmd_predict, "predict image files (JPEG, PNG, DICOM, ...)", runs, as_json)
    p.add_argument("run", metavar="RUN", help="a run id, as `runs` lists them")
    p.add_argument("files", nargs="+", metavar="FILE", help="image files: JPEG, PNG, DICOM and others Pillow reads")
    p.add_argument("--heatmap", metavar="OUT.png", help="write the Grad-CAM overlay of the one FILE to this PNG")
    p.add_argument("--randomized", action="store_true",
                   help="the heat map of a copy of the model with random weights (Adebayo et al.'s sanity check)")
    p.add_argument("--heatmap-size", type=int, metavar="PX", help="side of the PNG (default: the model's input size)")

    p = add("runs", cmd_runs, "list runs", runs, as_json)

    p = add("recipes", cmd_recipes, "each model's settings under our recipe and the study's, with the study's "
                                    "assumptions", as_json)

    p = add("worker", cmd_worker, "train queued runs until none are left", runs)

    p = add("cancel", cmd_cancel, "stop a queued or running run", runs)
    p.add_argument("run", metavar="RUN", help="a run id, as `runs` lists them")

"""Model quality benchmark: train the study's lineup with its defaults, score each on the test split.

    python benchmarks/quality.py                                  # all five models on ../shared/data/chest_xray
    python benchmarks/quality.py --reuse --update-docs            # resume: keep finished runs, then write the tables
    python benchmarks/quality.py --render --update-docs           # measure nothing: rewrite the tables from quality.json
    python benchmarks/quality.py --models baseline_cnn,regularized_cnn --epochs-override baseline_cnn=2
    python benchmarks/quality.py --data /tmp/demo --runs /tmp/bench-runs --out /tmp/results

Every model is trained through the CLI the dashboard's worker runs
(`python -m cxr_core train --data DIR --model NAME --runs BENCHRUNS`), each in
its own process, with the model's defaults (`cxr_core.config.default_settings`)
and the same seed, hence the same patient-grouped split. Each is then scored
with `python -m cxr_core evaluate RUN --split test --json`. A sixth row is the
soft-vote ensemble of the models that finished: the mean of their
probabilities, thresholded at a cut chosen on the validation predictions with
the same rule the single models use.

Transfer models get ImageNet weights when they are available (in Keras' cache
or downloadable); offline they train from random initialisation and the table
says so. Results are written after every model (benchmarks/results/quality.json
and quality.md), so a failure late in the lineup keeps what finished; rerun
with --reuse to pick up the finished runs (same settings, same data) instead of
training them again.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

import pandas as pd
from quality_report import OFFLINE, metric_cell, render

import common
from cxr_core import evaluate, reference, registry
from cxr_core.config import METRICS, UserError
from cxr_core.registry import default_settings
from cxr_core.store import OWN, RunStore, evaluation_files

DEFAULT_TEST = common.DEFAULT_TEST_DATA
FAMILIES = ("mobilenetv2", "densenet121")


def family(model: str) -> str | None:
    """The keras.applications family of a pretrained model, None for one trained from scratch."""
    spec = registry.get(model)
    return spec.family if spec.pretrained else None


def imagenet_reachable(timeout: float = 3.0) -> bool:
    """Can Keras download its weights? (They come from storage.googleapis.com.)"""
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def keras_cached(model: str) -> bool:
    """Are the model's ImageNet weights already in Keras' cache (~/.keras/models), so no download is needed?"""
    import os

    from cxr_core.models import weight_file_name  # imports TensorFlow: only asked for transfer models

    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return (home / "models" / weight_file_name(family(model), default_settings(model).image_size)).is_file()


def plan_weights(models: list[str], requested: list[str]) -> dict[str, tuple[str | None, str]]:
    """Per model: (value for `train --weights`, or None to leave the default; what the table says)."""
    mode, files = "auto", {}
    for item in requested:
        if "=" in item:
            fam, path = item.split("=", 1)
            if fam not in FAMILIES:
                raise SystemExit(f"--weights {item}: use mobilenetv2=PATH or densenet121=PATH")
            files[fam] = str(Path(path).expanduser().resolve())
        elif item in ("auto", "imagenet", "none"):
            mode = item
        else:
            raise SystemExit(f"--weights {item}: use auto, imagenet, none, or FAMILY=PATH")
    reachable = None
    plan = {}
    for model in models:
        fam = family(model)
        if fam is None:
            plan[model] = (None, "none (trained from scratch)")
        elif fam in files:
            plan[model] = (files[fam], f"ImageNet (local file {Path(files[fam]).name})")
        elif mode == "none":
            plan[model] = ("none", "random init (--weights none)")
        elif mode == "imagenet" or keras_cached(model):
            plan[model] = ("imagenet", "ImageNet (pretrained)")
        else:
            reachable = imagenet_reachable() if reachable is None else reachable
            plan[model] = ("imagenet", "ImageNet (pretrained)") if reachable else ("none", OFFLINE)
    return plan


def expected_settings(model: str, epochs: int | None, weights: str | None, data: Path, recipe: str = "improved") -> dict:
    settings = default_settings(model, recipe)
    if epochs is not None:
        settings.epochs = epochs
    if weights is not None:
        settings.weights = weights
    return dict(settings.to_dict(), data_dir=str(data))


def find_reusable(store: RunStore, wanted: dict) -> str | None:
    """The newest finished run with exactly these settings and a stored test evaluation."""
    for run in store.finished():  # newest first
        if run.settings == wanted and (run.path / "evaluation_test.json").is_file():
            return run.run_id
    return None


def train(model: str, args, store_dir: Path, epochs: int | None, weights: str | None, log_dir: Path,
          recipe: str = "improved") -> str:
    command = [sys.executable, "-m", "cxr_core", "train", "--data", str(args.data), "--model", model,
               "--recipe", recipe, "--runs", str(store_dir)]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    if weights is not None:
        command += ["--weights", weights]
    print(f"  $ {' '.join(command[1:])}", flush=True)
    log = log_dir / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    child = common.run_child(command, log_path=log, echo=not args.quiet)
    run_id = next((line.strip() for line in reversed(child["lines"]) if line.strip()), "")
    if child["rc"] != 0:
        tail = " | ".join(child["lines"][-3:])
        raise RuntimeError(f"training {model} failed (exit {child['rc']}); log {log}: {tail}")
    return run_id


def evaluate_test(run_id: str, store_dir: Path, data: Path | None = None) -> dict:
    """The run's own test evaluation, or (with `data`) its evaluation on another labelled folder."""
    command = [sys.executable, "-m", "cxr_core", "evaluate", run_id, "--split", "test", "--json",
               "--runs", str(store_dir)] + (["--data", str(data)] if data else [])
    child = common.run_child(command, echo=False)
    if child["rc"] != 0:
        raise RuntimeError(f"evaluating {run_id} failed: {' | '.join(child['lines'][-3:])}")
    return json.loads(child["lines"][-1])


def _scores(result: dict) -> dict:
    """The figures a table shows of one evaluation."""
    return {"source": result.get("source"), "n_test": result.get("n"), "n_normal": result.get("n_normal"), "n_pneumonia": result.get("n_pneumonia"),
            "threshold": result.get("threshold"), "confusion_matrix": result.get("confusion_matrix"),
            "ci95": {m: (result.get("ci95") or {}).get(m) for m in METRICS}, **{m: result.get(m) for m in METRICS}}


def model_row(model: str, run_id: str, store: RunStore, result: dict, weights_used: str,
              overridden: bool, reused: bool, shifted: dict | None = None) -> dict:
    run = store.get(run_id)
    history = run.history()
    row = {
        "model": model if run.recipe == "improved" else f"{model} (study recipe)", "recipe": run.recipe,
        "run": run_id, "reused": reused,
        "weights": run.settings.get("weights") if family(model) else None, "weights_used": weights_used,
        "image_size": run.settings.get("image_size"),
        "epochs_configured": run.settings.get("epochs"), "epochs_run": len(history),
        "epochs_overridden": overridden,
        "train_seconds": run.status.get("duration"),
        "fit_seconds": round(sum(h.get("seconds", 0.0) for h in history), 1),
        "best_val_auc": max((h["val_auc"] for h in history if h.get("val_auc") is not None), default=None),
        "threshold": result.get("threshold"),
        "n_test": result.get("n"), "n_normal": result.get("n_normal"), "n_pneumonia": result.get("n_pneumonia"),
        "confusion_matrix": result.get("confusion_matrix"),
        "ci95": {m: (result.get("ci95") or {}).get(m) for m in METRICS},
        "shifted": _scores(shifted) if shifted else None,
    }
    row.update({m: result.get(m) for m in METRICS})
    return row


def ensemble_scores(rows: list[dict], store: RunStore, source: str = OWN) -> tuple[dict, dict]:
    """Soft vote of `rows` on one test source: (evaluation, threshold choice made on validation)."""
    merged = {}
    for split, where in (("val", OWN), ("test", source)):
        frame = None
        for i, row in enumerate(rows):
            path = evaluation_files(store.run_path(row["run"]), split, where)[1]
            part = pd.read_csv(path)[["path", "label", "patient_id", "probability"]].rename(columns={"probability": f"p{i}"})
            # Inner join on the image: a member that could not decode an image leaves it out of the vote.
            frame = part if frame is None else frame.merge(part, on=["path", "label", "patient_id"], how="inner")
        merged[split] = frame
    columns = [f"p{i}" for i in range(len(rows))]
    recipe = default_settings(rows[0]["model"])
    val, test = merged["val"], merged["test"]
    choice = evaluate.choose_threshold(val["label"].to_numpy(), val[columns].mean(axis=1).to_numpy(),
                                       recipe.target_sensitivity, rule=recipe.threshold_rule)
    groups = test["patient_id"].to_numpy() if "patient_id" in test else None
    return evaluate.evaluate_predictions(test["label"].to_numpy(), test[columns].mean(axis=1).to_numpy(),
                                         choice["threshold"], groups=groups), choice


def ensemble_row(rows: list[dict], store: RunStore, shifted_source: str | None = None) -> dict | None:
    """Soft vote: mean member probability; threshold chosen on validation, scored on test."""
    if len(rows) < 2:
        return None
    result, choice = ensemble_scores(rows, store)
    shifted = dict(ensemble_scores(rows, store, shifted_source)[0], source=shifted_source) if shifted_source else None
    sizes = sorted({r["image_size"] for r in rows})
    row = {
        "model": f"ensemble (soft vote of {len(rows)})", "members": [r["model"] for r in rows], "run": None,
        "reused": None, "weights": None, "weights_used": "members' own",
        "image_size": "/".join(str(s) for s in sizes), "epochs_configured": None, "epochs_run": None,
        "epochs_overridden": any(r["epochs_overridden"] for r in rows),
        "train_seconds": sum(r["train_seconds"] or 0 for r in rows), "fit_seconds": sum(r["fit_seconds"] or 0 for r in rows),
        "best_val_auc": None, "threshold": choice["threshold"], "threshold_rule": choice["rule"],
        "n_test": result["n"], "n_normal": result["n_normal"], "n_pneumonia": result["n_pneumonia"],
        "confusion_matrix": result["confusion_matrix"], "ci95": {m: (result.get("ci95") or {}).get(m) for m in METRICS},
        "shifted": _scores(shifted) if shifted else None,
    }
    row.update({m: result.get(m) for m in METRICS})
    return row


def test_split_description(store: RunStore, run_id: str) -> str:
    split = store.split(run_id)
    test = split[split.split == "test"]
    if not test.empty and (test.source_split == "test").all():
        return "the folder's official test/ split"
    return f"a patient-grouped test split carved from train by cxr_core (seed {store.get(run_id).settings.get('seed')})"


def parse_overrides(items: list[str]) -> dict[str, int]:
    overrides = {}
    for item in items:
        model, _, value = item.partition("=")
        if model not in registry.names() or not value.isdigit() or int(value) < 1:
            raise SystemExit(f"--epochs-override {item}: use MODEL=N with MODEL one of {', '.join(registry.names())}")
        overrides[model] = int(value)
    return overrides


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA, help="Kaggle-layout folder (default: %(default)s)")
    p.add_argument("--test-data", type=Path, default=DEFAULT_TEST if DEFAULT_TEST.is_dir() else None,
                   help="a labelled folder of the official test split to score every model on "
                        "(default: %(default)s; the headline table)")
    p.add_argument("--models", default=",".join(registry.names()), help="comma-separated subset (default: all five)")
    p.add_argument("--recipes", default="improved,study",
                   help="recipes to train each model with (registry.Recipe; default: %(default)s: ours beside the study's)")
    p.add_argument("--epochs-override", action="append", default=[], metavar="MODEL=N",
                   help="train MODEL for N epochs instead of its default (repeatable; the table says so)")
    p.add_argument("--weights", action="append", default=[], metavar="auto|imagenet|none|FAMILY=PATH",
                   help="transfer models' weights (default auto: ImageNet where available, else random init, labelled)")
    p.add_argument("--reuse", action="store_true", help="reuse finished runs in the bench store with identical settings and data folder "
                        "(it cannot see code changes: retrain after changing a model or the pipeline)")
    p.add_argument("--runs", type=Path, default=common.WORK_DIR / "runs", help="the benchmark's run store (default: %(default)s)")
    p.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="where quality.json/.md go (default: %(default)s)")
    p.add_argument("--render", action="store_true",
                   help="measure nothing: rewrite quality.md (and with --update-docs the docs) from quality.json")
    common.add_docs_flags(p)
    p.add_argument("--quiet", action="store_true", help="do not echo the training output")
    args = p.parse_args(argv)
    if args.render:
        return render_stored(args)

    args.data = args.data.expanduser().resolve()
    try:
        from cxr_core.data import resolve_root

        resolve_root(args.data)  # a wrong --data fails here, not once per model
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in registry.names()]
    if unknown or not models:
        raise SystemExit(f"--models: unknown {unknown}; choose from {', '.join(registry.names())}")
    overrides = parse_overrides(args.epochs_override)
    weights = plan_weights(models, args.weights)
    store_dir = args.runs.expanduser().resolve()
    store = RunStore(store_dir)
    log_dir = store_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    from cxr_core.demo import is_synthetic

    result = {
        "benchmark": "quality", "command": common.command_line(), "date": common.now_iso(),
        "git": common.git_state(), "machine": common.machine(), "data": common.project_relative(args.data),
        "test_data": args.test_data and common.project_relative(args.test_data), "synthetic": is_synthetic(args.data),
        "models": models, "epochs_override": {m: n for m, n in overrides.items() if m in models},
        "rows": [], "ensemble": None, "failed": [], "test_split": None, "complete": False,
        "published": reference.PUBLISHED, "published_label": "published, official test split",
        "not_comparable": reference.NOT_COMPARABLE,
    }

    def save():
        result["date"] = common.now_iso()
        common.write_results(args.out, "quality", result, "# Quality benchmark\n\n" + render(result))

    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    if not recipes or set(recipes) - set(registry.Recipe):
        raise SystemExit(f"--recipes: choose from {', '.join(registry.Recipe)}")
    result["recipes"] = recipes
    for model, recipe in [(m, r) for m in models for r in recipes]:
        epochs = overrides.get(model)
        weight_value, weights_used = weights[model]
        print(f"[{model}, {recipe} recipe] epochs {epochs or 'default'}, weights: {weights_used}", flush=True)
        try:
            wanted = expected_settings(model, epochs, weight_value, args.data, recipe)
            run_id = find_reusable(store, wanted) if args.reuse else None
            reused = run_id is not None
            if reused:
                print(f"  reusing finished run {run_id}", flush=True)
            else:
                run_id = train(model, args, store_dir, epochs, weight_value, log_dir, recipe)
            test = evaluate_test(run_id, store_dir)
            shifted = evaluate_test(run_id, store_dir, args.test_data) if args.test_data else None
            row = model_row(model, run_id, store, test, weights_used, model in overrides, reused, shifted)
        except Exception as error:  # keep going: one model's failure must not lose the others
            print(f"  FAILED: {error}", flush=True)
            result["failed"].append({"model": model, "recipe": recipe, "error": str(error)[:500]})
            save()
            continue
        result["rows"].append(row)
        if result["test_split"] is None:
            result["test_split"] = {"n": row["n_test"], "n_normal": row["n_normal"], "n_pneumonia": row["n_pneumonia"],
                                    "kind": test_split_description(store, run_id)}
        print("  own test: " + ", ".join(f"{m} {metric_cell(row, m)}" for m in METRICS), flush=True)
        if row["shifted"]:
            print("  official test: " + ", ".join(f"{m} {metric_cell(row['shifted'], m)}" for m in METRICS), flush=True)
        save()

    try:
        source = next((r["shifted"]["source"] for r in result["rows"] if r.get("shifted")), None)
        result["ensemble"] = ensemble_row([r for r in result["rows"] if r.get("recipe", "improved") == "improved"],
                                          store, source)
    except Exception as error:
        result["failed"].append({"model": "ensemble", "error": str(error)[:500]})
    result["complete"] = not result["failed"]
    save()
    publish(result, args)
    return 0 if result["complete"] else 1


def publish(result: dict, args) -> None:
    """Print the tables; with --update-docs rewrite docs/results.md's and the README's sections."""
    body = render(result)
    print("\n" + body)
    if args.update_docs:
        for path in common.update_docs({"quality": body}, args.docs_root):
            print(f"updated {path}")
    print(f"\nwrote {args.out / 'quality.json'} and {args.out / 'quality.md'}")


def render_stored(args) -> int:
    result = common.read_results(args.out, "quality")
    common.write_results(args.out, "quality", result, "# Quality benchmark\n\n" + render(result))
    publish(result, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The quality grid: train model x recipe x seed through the CLI, score each run on a test folder, store it.

    python benchmarks/grid.py --models regularized_cnn --recipes defaults,study --seeds 1,2,3 --keep --update-docs
    python benchmarks/grid.py --models baseline_cnn --recipes defaults --seeds 42 --keep --update-docs
    python benchmarks/grid.py --render --update-docs       # measure nothing: rewrite the tables from grid.json
    python benchmarks/grid.py --data /tmp/demo --test-data /tmp/demo2 --seeds 1,2 --epochs 1 --out /tmp/o

Each cell is `python -m cxr_core train --model M --seed S FLAGS` (FLAGS from RECIPES), then
`python -m cxr_core evaluate RUN --split test --data TEST --json` (the official test split's dev half
by default) and the run's own carved test split beside it. Seeds run outermost, so a stopped grid
still holds whole comparisons. Every run is stored with its commit, command, settings, confusion
counts and the path of its per-image predictions; where two or more seeds of one cell have their
predictions at hand, the seeds' mean gets a pooled 95% interval (a bootstrap over patients).
Thresholds come from each run's validation split only. benchmarks/grid_report.py renders the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from grid_report import render_docs, render_markdown
from sklearn.metrics import roc_auc_score

import common
from cxr_core import registry
from cxr_core.config import METRICS
from cxr_core.evaluate import metrics_at_threshold

# name -> (what it changes, extra `train` flags). "defaults" is the shipped recipe; each other row
# changes one thing, so its difference to "defaults" is that thing's worth.
RECIPES: dict[str, tuple[str, list[str]]] = {
    "defaults": ("the model's shipped defaults", []),
    "study": ("the seed study's recipe through the product (`--recipe study`): 180 px, Conv 16/32/64, Flatten, "
              "Dense 128, flip/rotation/zoom 0.1, constant Adam 1e-3, 10 epochs, no class weights, threshold 0.5",
              ["--recipe", "study"]),
    "image_96": ("96 px instead of 64", ["--image-size", "96"]),
    "image_128": ("128 px instead of 64 (the defaults before)", ["--image-size", "128"]),
    "zoom_in_10_at_128": ("128 px with zoom-in augmentation up to 10% instead of 30%",
                          ["--image-size", "128", "--zoom-in", "0.1"]),
    "previous_defaults": ("192 px with zoom-in up to 10% (the defaults two changes ago)",
                          ["--image-size", "192", "--zoom-in", "0.1"]),
    "random_init": ("transfer models without their ImageNet weights (offline)", ["--weights", "none"]),
    "ensemble_3": ("three of the defaults' runs on one patient split, seeds S to S+2, probabilities averaged "
                   "(`--ensemble 3`)", ["--ensemble", "3"]),
}
# Threshold rules compared on the same trained runs: each sees only a run's validation predictions.
RULES: dict[str, dict] = {
    "sensitivity >= 0.95 on validation": dict(threshold_rule="sensitivity", target_sensitivity=0.95),
    "sensitivity >= 0.90 on validation": dict(threshold_rule="sensitivity", target_sensitivity=0.90),
    "Youden's J on validation": dict(threshold_rule="youden"),
    "fixed 0.5": dict(threshold_rule="fixed", fixed_threshold=0.5),
}
BOOTSTRAP = 1000  # resamples of patients for the pooled interval, as cxr_core.evaluate uses


def cli(args, *command: str, log: Path | None = None) -> list[str]:
    """One `python -m cxr_core` child to the end; its output lines, or an error with its last lines."""
    child = common.run_child([sys.executable, "-m", "cxr_core", *command, "--runs", str(args.runs)],
                             log_path=log, echo=bool(log) and not args.quiet)
    if child["rc"] != 0:
        raise RuntimeError(f"`{' '.join(command[:2])}` failed (exit {child['rc']}): {' | '.join(child['lines'][-3:])}")
    return child["lines"]


def scores(evaluation: dict, run_dir: Path) -> dict:
    """What the tables show of one evaluation, with the confusion counts and where its predictions are."""
    from cxr_core.store import OWN, evaluation_files

    source = evaluation.get("source") or OWN
    predictions = evaluation_files(run_dir, "test", source)[1]
    return {"source": source, "n": evaluation["n"], "n_normal": evaluation.get("n_normal"),
            "n_pneumonia": evaluation.get("n_pneumonia"), "threshold": evaluation.get("threshold"),
            "confusion_matrix": evaluation.get("confusion_matrix"), "predictions": common.project_relative(predictions),
            "ci95": {m: (evaluation.get("ci95") or {}).get(m) for m in METRICS}, **{m: evaluation.get(m) for m in METRICS}}


def rule_rows(run_dir: Path, source: str) -> list[dict]:
    """Each of RULES applied to one run's stored validation predictions and scored on `source`."""
    from dataclasses import replace

    from cxr_core.config import TrainSettings
    from cxr_core.evaluate import threshold_for
    from cxr_core.store import evaluation_files

    stored = json.loads((run_dir / "settings.json").read_text())
    # An ensemble keeps its members' recipe under member_settings and its own threshold rule on top.
    settings = TrainSettings.from_dict({**stored.get("member_settings", {}), **stored})
    val = pd.read_csv(evaluation_files(run_dir, "val")[1])
    test = pd.read_csv(evaluation_files(run_dir, "test", source)[1])
    rows = []
    for name, changes in RULES.items():
        choice = threshold_for(replace(settings, **changes), val["label"].to_numpy(), val["probability"].to_numpy())
        at = metrics_at_threshold(test["label"].to_numpy(), test["probability"].to_numpy(), choice["threshold"])
        rows.append({"rule": name, "threshold": choice["threshold"],
                     **{k: at[k] for k in ("accuracy", "sensitivity", "specificity")}})
    return rows


def run_cell(model: str, recipe: str, seed: int, args, provenance: dict) -> dict:
    """Train one cell of the grid, score it on the test folder and its own split: its stored row."""
    flags = RECIPES[recipe][1] + ([] if args.epochs is None else ["--epochs", str(args.epochs)])
    log = args.runs / "logs" / f"{model}-{recipe}-{seed}.log"
    command = ["train", "--data", str(args.data), "--model", model, "--seed", str(seed), *flags]
    print(f"[{model} {recipe} seed {seed}] $ cxr_core {' '.join(command)}", flush=True)
    run_id = cli(args, *command, log=log)[-1].strip()  # train's last line is the run id (a CLI contract)
    run_dir = args.runs / run_id
    test = json.loads(cli(args, "evaluate", run_id, "--split", "test", "--json", "--data", str(args.test_data))[-1])
    own = json.loads(cli(args, "evaluate", run_id, "--split", "test", "--json")[-1])
    status = json.loads((run_dir / "status.json").read_text())
    settings = json.loads((run_dir / "settings.json").read_text())
    history_file = run_dir / "history.json"  # an ensemble has none: its members each have their own
    history = json.loads(history_file.read_text()) if history_file.is_file() else None
    print("  test: " + ", ".join(f"{m} {common.fmt(test.get(m))}" for m in METRICS), flush=True)
    return {"model": model, "recipe": recipe, "what": RECIPES[recipe][0], "flags": flags, "seed": seed, "run": run_id,
            **provenance, "image_size": settings.get("image_size"), "weights": settings.get("weights"),
            "epochs_configured": settings.get("epochs", (settings.get("member_settings") or {}).get("epochs")),
            "epochs_run": None if history is None else len(history), "members": settings.get("members"),
            "train_seconds": status.get("duration") or status["finished"] - status["created"],
            "test": scores(test, run_dir), "own": scores(own, run_dir),
            "rules": rule_rows(run_dir, test.get("source"))}


def pooled_interval(rows: list[dict], key: str = "test") -> dict | None:
    """95% interval of the seeds' mean of each metric: resample patients, score every run at its own threshold.

    Only from the per-image predictions the runs wrote; None when any is missing (no interval is invented)."""
    paths = [common.PROJECT_ROOT / (r[key].get("predictions") or "-") for r in rows]
    if len(rows) < 2 or not all(p.is_file() for p in paths):
        return None
    frames = [pd.read_csv(p).set_index("path").sort_index() for p in paths]
    if any(not f.index.equals(frames[0].index) for f in frames):
        return None  # not the same images: the seeds' mean would mix test sets
    y = frames[0]["label"].to_numpy()
    members = frames[0].groupby("patient_id").indices  # a child's images are resampled together
    patients, rng, draws = list(members.values()), np.random.default_rng(0), []
    for _ in range(BOOTSTRAP):
        idx = np.concatenate([patients[i] for i in rng.integers(0, len(patients), len(patients))])
        if len(set(y[idx])) < 2:
            continue
        per_run = []
        for frame, row in zip(frames, rows):
            p = frame["probability"].to_numpy()[idx]
            at = metrics_at_threshold(y[idx], p, row[key]["threshold"])
            per_run.append([at[m] if m != "auc" else roc_auc_score(y[idx], p) for m in METRICS])
        draws.append(np.nanmean(np.array(per_run, dtype=float), axis=0))
    low, high = np.nanpercentile(np.array(draws), [2.5, 97.5], axis=0)
    return {"runs": [r["run"] for r in rows], **{m: [float(a), float(b)] for m, a, b in zip(METRICS, low, high)}}


def cell_pools(rows: list[dict]) -> dict:
    """{"model/recipe": pooled interval} for every cell whose runs' predictions are at hand."""
    pools = {}
    for cell in dict.fromkeys((r["model"], r["recipe"]) for r in rows if "test" in r):
        pooled = pooled_interval([r for r in rows if (r["model"], r["recipe"]) == cell and "test" in r])
        if pooled:
            pools["/".join(cell)] = pooled
    return pools


def names(text: str, known, what: str) -> list[str]:
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    if not chosen or set(chosen) - set(known):
        raise SystemExit(f"--{what}: choose from {', '.join(known)}")
    return chosen


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA, help="training folder (default: %(default)s)")
    p.add_argument("--test-data", type=Path, default=common.DEFAULT_TEST_DATA,
                   help="labelled test folder every run is scored on (default: %(default)s, the dev half)")
    p.add_argument("--models", default=registry.DEFAULT_MODEL, help="comma-separated (default: %(default)s)")
    p.add_argument("--recipes", default="defaults,study", help="comma-separated subset of: " + ", ".join(RECIPES))
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default: %(default)s)")
    p.add_argument("--epochs", type=int, help="override every cell's epochs (smoke runs; the tables show epochs run)")
    p.add_argument("--runs", type=Path, default=common.WORK_DIR / "grid-runs", help="run store (default: %(default)s)")
    p.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="where grid.json/.md go (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the stored rows of cells not run now (each keeps its commit)")
    p.add_argument("--render", action="store_true", help="measure nothing: rewrite grid.md (and the docs) from grid.json")
    common.add_docs_flags(p)
    p.add_argument("--quiet", action="store_true", help="do not echo the training output")
    return p.parse_args(argv)


def folder_problem(args) -> str | None:
    """What is wrong with --data or --test-data, checked once before any cell trains; None if nothing."""
    from cxr_core.config import UserError
    from cxr_core.data import resolve_root

    try:
        resolve_root(args.data)
    except UserError as error:
        return f"--data: {error}"
    if not args.test_data.is_dir():
        return f"--test-data {args.test_data} is not a folder; pass a labelled folder (with test/)"
    return None


def main(argv=None) -> int:
    args = parse(argv)
    if args.render:
        return publish(common.read_results(args.out, "grid"), args)
    models = names(args.models, registry.names(), "models")
    recipes = names(args.recipes, RECIPES, "recipes")
    seeds = [int(s) for s in args.seeds.split(",")]
    problem = folder_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    args.runs = args.runs.expanduser().resolve()
    (args.runs / "logs").mkdir(parents=True, exist_ok=True)
    from cxr_core.demo import is_synthetic

    result = {"benchmark": "grid", "command": common.command_line(), "date": common.now_iso(), "git": common.git_state(),
              "machine": common.machine_line(common.machine()), "runs": [], "failed": [], "pooled": {}}
    provenance = {"commit": result["git"]["commit"], "dirty": result["git"]["dirty"], "date": result["date"][:10],
                  "command": result["command"], "machine": result["machine"], "data": common.project_relative(args.data),
                  "test_data": common.project_relative(args.test_data), "synthetic": is_synthetic(args.data)}
    cells, kept_pools = {(m, r, s) for m in models for r in recipes for s in seeds}, {}
    if args.keep and (args.out / "grid.json").is_file():
        stored = common.read_results(args.out, "grid")
        result["runs"] = [r for r in stored["runs"] if (r["model"], r["recipe"], r.get("seed")) not in cells]
        kept_pools = stored.get("pooled") or {}  # the report uses one only while its runs are the cell's runs
    for seed in seeds:
        for model, recipe in [(m, r) for m in models for r in recipes]:
            try:
                result["runs"].append(run_cell(model, recipe, seed, args, provenance))
            except Exception as error:  # one failed cell must not lose the others
                print(f"  FAILED: {error}", flush=True)
                result["failed"].append({"model": model, "recipe": recipe, "seed": seed, "error": str(error)[:500]})
            result["pooled"] = {**kept_pools, **cell_pools(result["runs"])}
            common.write_results(args.out, "grid", result, render_markdown(result))
    publish(result, args)
    return 1 if result["failed"] else 0


def publish(result: dict, args) -> int:
    """grid.md from the stored result; with --update-docs the README's and docs/results.md's sections."""
    common.write_results(args.out, "grid", result, render_markdown(result))
    if args.update_docs:
        stored = common.RESULTS_DIR / "withheld.json"  # the withheld half's independent scores, if any
        withheld = json.loads(stored.read_text()) if stored.is_file() else {"runs": [], "provenance": ""}
        for path in common.update_docs(render_docs(result, withheld), args.docs_root):
            print(f"updated {path}")
    print(f"wrote {args.out / 'grid.json'} and {args.out / 'grid.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

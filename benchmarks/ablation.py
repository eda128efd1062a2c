"""Recipe ablation on the official test dev half: what each choice in the regularized_cnn defaults is worth.

    python benchmarks/ablation.py --update-docs                    # every recipe, seeds 42 and 43
    python benchmarks/ablation.py --render --update-docs           # measure nothing: rewrite from ablation.json
    python benchmarks/ablation.py --recipes defaults,no_tta --seeds 42
    python benchmarks/ablation.py --data /tmp/demo --test-data /tmp/demo --runs /tmp/r --out /tmp/o

Each recipe is `python -m cxr_core train --model regularized_cnn` with the flags
below, once per seed (the seed also draws the patient-grouped validation
split), then `python -m cxr_core evaluate RUN --split test --data TEST --json`
on the shifted test folder, and the run's own carved test split beside it.
Recipes run seed by seed (every recipe at the first seed, then the second), so
a stopped benchmark still holds whole comparisons. A row shows the mean over
seeds and, in brackets, the lowest and highest seed: two seeds show the spread
of one training run, not a confidence interval.

Nothing is fitted on the test folder: thresholds come from each run's
validation split. The recipes were chosen while looking at this folder, so its
figures are optimistic for the recipes; the withheld other half of the official
test split is what an independent score uses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import common
from cxr_core import registry
from cxr_core.config import METRIC_LABELS as LABELS
from cxr_core.config import METRICS

MODEL = registry.DEFAULT_MODEL
DEFAULT_TEST = common.DEFAULT_TEST_DATA
METRIC_LABELS = tuple(LABELS[m] for m in METRICS)

# name -> (what it changes, extra `train` flags). "defaults" is the shipped recipe;
# each other row changes one thing, so its difference to "defaults" is that thing's worth.
RECIPES: dict[str, tuple[str, list[str]]] = {
    "defaults": ("the shipped recipe: 64 px, zoom-in augmentation up to 30%", []),
    "study": ("the seed study's recipe through the product (`--recipe study`): 180 px, Conv 16/32/64, Flatten, "
              "Dense 128, flip/rotation/zoom 0.1, constant Adam 1e-3, 10 epochs, no class weights, threshold 0.5",
              ["--recipe", "study"]),
    "image_96": ("96 px instead of 64", ["--image-size", "96"]),
    "image_128": ("128 px instead of 64 (the defaults before)", ["--image-size", "128"]),
    "zoom_in_10": ("zoom-in augmentation up to 10% instead of 30%", ["--zoom-in", "0.1"]),
    "previous_defaults": ("the recipe before the zoom-in change: 192 px, zoom-in up to 10%",
                          ["--image-size", "192", "--zoom-in", "0.1"]),
}


def train(flags: list[str], seed: int, args, log_dir: Path) -> tuple[str, float]:
    command = [sys.executable, "-m", "cxr_core", "train", "--data", str(args.data), "--model", MODEL,
               "--seed", str(seed), "--runs", str(args.runs), *flags]
    print(f"  $ {' '.join(command[1:])}", flush=True)
    started = time.time()
    child = common.run_child(command, log_path=log_dir / f"ablation-{time.strftime('%Y%m%d-%H%M%S')}.log",
                             echo=not args.quiet)
    if child["rc"] != 0:
        raise RuntimeError(f"training failed (exit {child['rc']}): {' | '.join(child['lines'][-3:])}")
    return child["lines"][-1].strip(), time.time() - started


def evaluate(run_id: str, args, data: Path | None) -> dict:
    command = [sys.executable, "-m", "cxr_core", "evaluate", run_id, "--split", "test", "--json",
               "--runs", str(args.runs)] + (["--data", str(data)] if data else [])
    child = common.run_child(command, echo=False)
    if child["rc"] != 0:
        raise RuntimeError(f"evaluating {run_id} failed: {' | '.join(child['lines'][-3:])}")
    return json.loads(child["lines"][-1])


# Threshold rules compared on the same trained runs: each is applied to a run's validation
# predictions only, and the threshold it gives is scored on the test folder.
RULES: dict[str, dict] = {
    "sensitivity >= 0.95 on validation": dict(threshold_rule="sensitivity", target_sensitivity=0.95),
    "sensitivity >= 0.90 on validation": dict(threshold_rule="sensitivity", target_sensitivity=0.90),
    "Youden's J on validation": dict(threshold_rule="youden"),
    "fixed 0.5": dict(threshold_rule="fixed", fixed_threshold=0.5),
}


def rule_rows(run_dir: Path, source: str) -> list[dict]:
    """Each of RULES applied to one run's stored validation predictions and scored on `source`."""
    from dataclasses import replace

    import pandas as pd

    from cxr_core.config import TrainSettings
    from cxr_core.evaluate import metrics_at_threshold, threshold_for
    from cxr_core.store import evaluation_files

    settings = TrainSettings.from_dict(json.loads((run_dir / "settings.json").read_text()))
    val = pd.read_csv(evaluation_files(run_dir, "val")[1])
    test = pd.read_csv(evaluation_files(run_dir, "test", source)[1])
    rows = []
    for name, changes in RULES.items():
        choice = threshold_for(replace(settings, **changes), val["label"].to_numpy(), val["probability"].to_numpy())
        at = metrics_at_threshold(test["label"].to_numpy(), test["probability"].to_numpy(), choice["threshold"])
        rows.append({"rule": name, "threshold": choice["threshold"], "accuracy": at["accuracy"],
                     "sensitivity": at["sensitivity"], "specificity": at["specificity"]})
    return rows


def summarise(runs: list[dict]) -> dict:
    """Mean and (lowest, highest) over seeds of every figure of one recipe."""
    out = {"seeds": [r["seed"] for r in runs], "runs": [r["run"] for r in runs]}
    for key in [f"test_{m}" for m in METRICS] + ["own_accuracy", "own_auc", "train_seconds", "epochs_run"]:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = (statistics.fmean(values), min(values), max(values)) if values else None
    return out


def _cell(triple, digits: int = 3) -> str:
    if triple is None:
        return "n/a"
    mean, low, high = triple
    return f"{mean:.{digits}f}" if low == high else f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def summarise_rules(runs: list[dict]) -> dict:
    """{recipe: {rule: {figure: (mean, low, high)}}} over the seeds of each recipe."""
    out = {}
    for run in runs:
        for row in run.get("rules") or []:
            out.setdefault(run["recipe"], {}).setdefault(row["rule"], []).append(row)
    return {recipe: {rule: {k: (statistics.fmean(v := [r[k] for r in rows if r[k] is not None]), min(v), max(v))
                            for k in ("threshold", "accuracy", "sensitivity", "specificity")}
                     for rule, rows in rules.items()} for recipe, rules in out.items()}


def render_rules(result: dict) -> str:
    rows = []
    for recipe, rules in summarise_rules(result["runs"]).items():
        for rule, figures in rules.items():
            rows.append([f"`{recipe}`", rule, *[_cell(figures[k]) for k in ("threshold", "accuracy", "sensitivity",
                                                                             "specificity")]])
    if not rows:
        return ""
    return "\n".join([
        "Threshold rules on the same runs: each rule sees only the run's validation predictions; the threshold it "
        "gives is scored on the test folder. Mean over seeds, lowest and highest seed in brackets: the spread of "
        "the threshold is the rule's instability.", "",
        common.markdown_table(["recipe", "rule", "threshold", "test accuracy", "test sensitivity", "test specificity"],
                              rows)])


def render(result: dict) -> str:
    rows = []
    for name, summary in result["recipes"].items():
        what, flags = result["recipe_flags"][name]
        minutes = summary["train_seconds"] and tuple(v / 60 for v in summary["train_seconds"])
        commits = sorted({r.get("commit") or common.commit_label(result["git"]) for r in result["runs"] if r["recipe"] == name})
        rows.append([f"`{name}`", what, " ".join(flags) or "(none)", ", ".join(commits), len(summary["seeds"]),
                     *[_cell(summary[f"test_{m}"]) for m in METRICS],
                     _cell(summary["own_accuracy"]), _cell(summary["own_auc"]), _cell(minutes, 1)])
    table = common.markdown_table(
        ["recipe", "what it changes", "train flags", "commit", "seeds", *[f"test {m}" for m in METRIC_LABELS],
         "own-split accuracy", "own-split AUC", "train min"], rows)
    return "\n".join([
        common.provenance(result),
        "",
        f"`regularized_cnn` trained on `{result['data']}`; \"test\" is `{result['test_data']}` "
        f"({result.get('n_test', '?')} images), thresholds chosen on each run's validation split. Mean over seeds "
        f"{', '.join(map(str, result['seeds']))}, lowest and highest seed in brackets. Own-split figures are on "
        "the test split carved from train: in-distribution, they flatter every recipe.",
        "",
        table,
        "",
        render_rules(result),
        "",
        "\"train min\" is each `train` command's wall time, decoding included; rows measured at different times "
        "shared the machine with different other work, so it is a rough size, not a speed comparison "
        "(docs/performance.md measures speed).",
        "",
        "Recipes were chosen while looking at this test folder (the dev half of the official test split), so its "
        "figures are optimistic for the chosen recipe; the other half is withheld and scored independently.",
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA, help="training folder (default: %(default)s)")
    p.add_argument("--test-data", type=Path, default=DEFAULT_TEST, help="the shifted test folder (default: %(default)s)")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset of: " + ", ".join(RECIPES))
    p.add_argument("--seeds", default="42,43", help="comma-separated seeds (default: %(default)s)")
    p.add_argument("--epochs", type=int, help="override every recipe's epochs (smoke runs)")
    p.add_argument("--runs", type=Path, default=common.WORK_DIR / "ablation-runs")
    p.add_argument("--out", type=Path, default=common.RESULTS_DIR)
    p.add_argument("--render", action="store_true",
                   help="measure nothing: rewrite ablation.md (and with --update-docs the docs) from ablation.json")
    common.add_docs_flags(p)
    p.add_argument("--keep", action="store_true",
                   help="keep the stored results' rows of recipes not run now (each row records its own commit)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.render:
        return render_stored(args)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"--recipes: unknown {unknown}; choose from {', '.join(RECIPES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.runs = args.runs.expanduser().resolve()
    log_dir = args.runs / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    flags = {n: (RECIPES[n][0], RECIPES[n][1] + (["--epochs", str(args.epochs)] if args.epochs else [])) for n in names}
    result = {"benchmark": "ablation", "command": common.command_line(), "date": common.now_iso(),
              "git": common.git_state(), "machine": common.machine(), "data": common.project_relative(args.data),
              "test_data": common.project_relative(args.test_data), "seeds": seeds, "recipe_flags": flags,
              "recipes": {}, "runs": [], "failed": []}
    stored_path = args.out / "ablation.json"
    if args.keep and stored_path.is_file():
        stored = json.loads(stored_path.read_text())
        kept = [r for r in stored.get("runs", []) if r["recipe"] not in names]
        result["runs"] = [dict(r, commit=r.get("commit") or common.commit_label(stored.get("git"))) for r in kept]
        result["recipe_flags"] = {**{r["recipe"]: stored["recipe_flags"][r["recipe"]] for r in kept}, **flags}
        result["seeds"] = sorted({*seeds, *(r["seed"] for r in kept)})
        order = list(RECIPES)
        names = sorted({*names, *(r["recipe"] for r in kept)},
                       key=lambda n: (order.index(n) if n in order else len(order), n))

    def save():
        for name in names:
            done = [r for r in result["runs"] if r["recipe"] == name]
            if done:
                result["recipes"][name] = summarise(done)
        result["date"] = common.now_iso()
        common.write_results(args.out, "ablation", result, "# Recipe ablation\n\n" + render(result))

    for seed in seeds:
        for name in [n for n in names if n in flags]:
            print(f"[{name} seed {seed}]", flush=True)
            try:
                run_id, seconds = train(flags[name][1], seed, args, log_dir)
                test = evaluate(run_id, args, args.test_data)
                own = evaluate(run_id, args, None)
            except Exception as error:  # one failed recipe must not lose the others
                print(f"  FAILED: {error}", flush=True)
                result["failed"].append({"recipe": name, "seed": seed, "error": str(error)[:500]})
                continue
            history = json.loads((args.runs / run_id / "history.json").read_text())
            result["n_test"] = test["n"]
            result["runs"].append({"recipe": name, "seed": seed, "run": run_id, "train_seconds": seconds,
                                   "epochs_run": len(history), **{f"test_{m}": test.get(m) for m in METRICS},
                                   "own_accuracy": own.get("accuracy"), "own_auc": own.get("auc"),
                                   "threshold": test.get("threshold"), "commit": common.commit_label(result["git"]),
                                   "rules": rule_rows(args.runs / run_id, test["source"])})
            print("  test: " + ", ".join(f"{m} {test.get(m) or float('nan'):.3f}" for m in METRICS), flush=True)
            save()
    save()
    publish(result, args)
    return 0 if not result["failed"] else 1


# The README's one results table: ours and the study's recipe, each over its seeds, beside the published figures.
README_ROWS = {"defaults": "ours: regularized_cnn, our recipe", "study": "regularized_cnn, the study's recipe"}


def render_readme(result: dict) -> str:
    from quality_report import published_rows, readme_table

    rows = []
    for name, label in README_ROWS.items():
        summary = result["recipes"].get(name)
        if summary:
            rows.append({"name": f"{label} ({len(summary['seeds'])} seeds)",
                         "images": f"{result.get('n_test', '?')} (dev half)",
                         **{m: _cell(summary[f"test_{m}"]) for m in METRICS}})
    commits = sorted({r.get("commit") for r in result["runs"] if r["recipe"] in README_ROWS and r.get("commit")})
    return "\n".join([
        readme_table(rows + published_rows()), "",
        f"Ours and the study's recipe: trained on `{result['data']}` through the same `train` command, scored on the "
        f"official test split's dev half, mean over seeds with the lowest and highest seed in brackets (commits "
        f"{', '.join(commits) or 'not recorded'}); each run's threshold from its own recipe (validation for ours, 0.5 "
        "for the study's). The published figures are on the whole official split. Every recipe and threshold rule "
        "tried: [docs/results.md](docs/results.md). " + common.provenance(result),
    ])


def publish(result: dict, args) -> None:
    body = render(result)
    print("\n" + body)
    if args.update_docs:
        sections = {"ablation": body}
        if any(name in result["recipes"] for name in README_ROWS):
            sections["results"] = render_readme(result)
        for path in common.update_docs(sections, args.docs_root):
            print(f"updated {path}")


def render_stored(args) -> int:
    result = common.read_results(args.out, "ablation")
    common.write_results(args.out, "ablation", result, "# Recipe ablation\n\n" + render(result))
    publish(result, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training section: time to quality, the study's recipe against ours, both through the product's code.

The study's side is `train --model regularized_cnn --recipe study` (the registry's study preset);
ours is the same command with the default recipe. Each repeat runs, in this order and one at a
time: the study's regularized CNN, ours, the study's baseline CNN (the second row), so a slow
spell of the shared machine hits both sides alike.
Every side's child scores each epoch's model on the official test dev half; that scoring's time is
subtracted (speed_time_to_quality.DEFINITION). Repeats rerun the same seeds: their range is the
machine's timing noise plus TensorFlow's non-determinism, not seed-to-seed variation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from speed_ours import train_product
from speed_time_to_quality import DEFINITION, exclude_evaluation, final_target, moved_beyond_range, spread, time_to_quality

import common
from cxr_core import registry

# Result keys keep their names ("seed_*": the seed study's recipe), so earlier results still read.
SIDES = {"seed_regularized": "regularized_cnn, the study's recipe", "ours": "regularized_cnn, our recipe",
         "seed_baseline": "baseline_cnn, the study's recipe"}
SIDE_MODELS = {"seed_regularized": (registry.DEFAULT_MODEL, "study"), "ours": (registry.DEFAULT_MODEL, "improved"),
               "seed_baseline": (registry.REFERENCE_MODEL, "study")}
FIGURES = ("time_to_quality_s", "epoch_reached", "final_accuracy", "final_auc", "total_wall_s", "seconds_per_epoch",
           "evaluation_s")


def side_record(name: str, repeat: int, side: dict) -> dict:
    rows = exclude_evaluation(side["epochs"], side["launched"])
    keep = ("epoch", "wall_s", "seconds", "accuracy", "sensitivity", "specificity", "auc", "threshold", "val_auc",
            "eval_s", "threshold_rule")
    evaluation_s = float(sum(e["eval_s"] for e in side["epochs"]))
    final = rows[-1]
    return {"side": name, "repeat": repeat, "per_epoch": [{k: r.get(k) for k in keep} for r in rows],
            # Decode, fit and (ours) the job's own scoring and saving; the benchmark's dev scoring left out.
            "total_wall_s": side["wall_s"] - evaluation_s, "evaluation_s": evaluation_s,
            "seconds_per_epoch": float(np.median([r["seconds"] for r in rows])), "peak_rss_mib": side["peak_rss_mib"],
            "final": {k: final.get(k) for k in ("accuracy", "sensitivity", "specificity", "auc", "threshold")},
            **({"run": side["run"], "image_size": side["image_size"]} if "run" in side else {})}


def dev_folder(ctx) -> Path:
    dev = Path(os.path.abspath(Path(ctx.args.test_data).expanduser()))  # a symlinked shared/ keeps the name given
    if not (dev / "test").is_dir():
        raise RuntimeError(f"no test/ folder in {common.project_relative(dev)}: the training section scores every "
                           "epoch on the official test dev half; pass --test-data with the folder that holds test/")
    return dev


def run_repeat(ctx, repeat: int, order: list[str], dev: Path) -> list[dict]:
    epochs, records = ctx.args.epochs, []
    for name in order:
        print(f"  repeat {repeat}/{ctx.args.repeats}: {SIDES[name]}", flush=True)
        model, recipe = SIDE_MODELS[name]
        side = train_product(ctx, epochs, f"training-{name}-{repeat}", dev, model=model, recipe=recipe)
        records.append(side_record(name, repeat, side))
    target = final_target(next(r for r in records if r["side"] == "seed_regularized")["per_epoch"])
    for record in records:
        record["time_to_quality"] = time_to_quality(record["per_epoch"], target)
    return records


def summarise(records: list[dict], repeats: int) -> dict:
    summary = {}
    for name in SIDES:
        mine = [r for r in records if r["side"] == name]
        if not mine:
            continue
        reached = [r["time_to_quality"] for r in mine]
        summary[name] = {
            "time_to_quality_s": spread([t["wall_s"] for t in reached]),
            "epoch_reached": spread([t["epoch"] for t in reached]),
            "reached": sum(t["reached"] for t in reached), "repeats": len(mine),
            "final_accuracy": spread([r["final"]["accuracy"] for r in mine]),
            "final_auc": spread([r["final"]["auc"] for r in mine]),
            "total_wall_s": spread([r["total_wall_s"] for r in mine]),
            "seconds_per_epoch": spread([r["seconds_per_epoch"] for r in mine]),
            "evaluation_s": spread([r["evaluation_s"] for r in mine]),
            "peak_rss_mib": spread([r["peak_rss_mib"] for r in mine]),
        }
    ratios = []
    for repeat in range(1, repeats + 1):
        by_side = {r["side"]: r["time_to_quality"] for r in records if r["repeat"] == repeat}
        seed, ours = by_side.get("seed_regularized"), by_side.get("ours")
        ratios.append(ours["wall_s"] / seed["wall_s"] if seed and ours and seed["reached"] and ours["reached"] else None)
    summary["ratio"] = spread(ratios)
    summary["target_accuracy"] = spread([r["time_to_quality"]["target"]["accuracy"] if r["time_to_quality"]["target"]
                                         else None for r in records if r["side"] == "seed_regularized"])
    summary["target_auc"] = spread([r["time_to_quality"]["target"]["auc"] if r["time_to_quality"]["target"]
                                    else None for r in records if r["side"] == "seed_regularized"])
    return summary


def moved_figures(previous: dict | None, summary: dict) -> list[dict]:
    """Figures whose median moved since the previous stored result by more than their range now."""
    if not previous or "summary" not in previous:
        return []
    moved = []
    for name, figures in summary.items():
        if name in SIDES:
            pairs = [(f"{name} {figure}", previous["summary"].get(name, {}).get(figure), figures[figure]) for figure in FIGURES]
        else:
            pairs = [(name, previous["summary"].get(name), figures)]
        for label, before, now in pairs:
            if moved_beyond_range(before, now):
                moved.append({"figure": label, "previous_median": before["median"], "median": now["median"],
                              "range": [now["min"], now["max"]], "previous_commit": common.commit_label(previous.get("git"))})
    return moved


def section_training(ctx) -> dict:
    dev = dev_folder(ctx)
    order = ["seed_regularized", "ours"] + ([] if ctx.args.skip_seed_baseline else ["seed_baseline"])
    records = []
    for repeat in range(1, ctx.args.repeats + 1):
        records += run_repeat(ctx, repeat, order, dev)
    summary = summarise(records, ctx.args.repeats)
    ours = [r for r in records if r["side"] == "ours"]
    ctx.training_peak = {"peak_rss_mib": max(r["peak_rss_mib"] for r in ours), "epochs": len(ours[-1]["per_epoch"]),
                         "limit": ctx.args.limit}
    result = {"definition": DEFINITION, "test_data": common.project_relative(dev), "repeats": ctx.args.repeats,
              "order": order, "seed_recipe": dict(registry.default_settings(registry.DEFAULT_MODEL, "study").to_dict(),
                                  **({"epochs": ctx.args.epochs} if ctx.args.epochs else {})),
              "runs": records, "summary": summary,
              "moved_since_previous": moved_figures((ctx.previous or {}).get("training"), summary)}
    ratio = summary["ratio"]
    print(f"  time to quality, ours / seed regularized: median {common.fmt(ratio['median'], 2)} "
          f"[{common.fmt(ratio['min'], 2)}, {common.fmt(ratio['max'], 2)}] over {ratio['n']} repeat(s)", flush=True)
    return result

"""Training section: the full default run against the study's recipe, both through the product's CLI.

Each repeat runs `python -m cxr_core train --model regularized_cnn --recipe study`, then the same with our
defaults, one at a time, each with a cold private cache (decoding counts, as on a first run). Wall time and
peak memory (wait4's ru_maxrss, the child's lifetime high-water mark) are the train child's; then
`python -m cxr_core evaluate RUN --data DEV --split test --json` scores the model the run kept, at its own
threshold, on the official test dev half, untimed. Repeats rerun the same seeds: their range is timing
noise and TensorFlow's non-determinism, not seed-to-seed variation.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

from speed_report import SIDES

import common
from cxr_core import registry

# Result keys keep their names ("seed_regularized": the seed study's recipe), so earlier results still read.
RECIPES = {"seed_regularized": "study", "ours": "improved"}


def dev_folder(args) -> Path:
    dev = Path(os.path.abspath(Path(args.test_data).expanduser()))  # a symlinked shared/ keeps the name given
    if not (dev / "test").is_dir():
        raise RuntimeError(f"no test/ folder in {common.project_relative(dev)}: the training section scores runs "
                           "on the official test dev half; pass --test-data with the folder that holds test/")
    return dev


def cli(*args, env: dict, echo: bool = False) -> dict:
    child = common.run_child([sys.executable, "-m", "cxr_core", *map(str, args)], env=env, echo=echo)
    if child["rc"] != 0:
        raise RuntimeError(f"`cxr_core {args[0]}` failed: {' | '.join(child['lines'][-3:])}")
    return child


def run_side(ctx, side: str, repeat: int, dev: Path) -> dict:
    """One side's full run, then its kept model scored on the dev half; the record the report reads."""
    from speed import fresh

    from cxr_core.store import RunStore

    runs, cache = ctx.work / f"runs-{side}-{repeat}", fresh(ctx.work / f"cache-{side}-{repeat}")
    env = common.cli_env(CXR_CACHE_DIR=cache, TF_CPP_MIN_LOG_LEVEL="2")
    flags = [*(["--epochs", ctx.args.epochs] if ctx.args.epochs else []),
             *(["--image-size", ctx.args.image_size] if ctx.args.image_size else [])]
    train = cli("train", "--model", registry.DEFAULT_MODEL, "--recipe", RECIPES[side], "--data", ctx.data,
                "--runs", runs, *flags, env=env, echo=not ctx.args.quiet)
    run = RunStore(runs).get(train["lines"][-1].strip())
    scored = cli("evaluate", run.run_id, "--runs", runs, "--data", dev, "--split", "test", "--json", env=env)
    report = json.loads(next(line for line in reversed(scored["lines"]) if line.startswith("{")))
    history = run.history()
    return {"side": side, "repeat": repeat, "run": run.run_id, "image_size": run.settings["image_size"],
            "per_epoch": [{k: e.get(k) for k in ("epoch", "seconds", "val_auc")} for e in history],
            "total_wall_s": train["wall_s"], "evaluation_s": scored["wall_s"], "peak_rss_mib": train["peak_rss_mib"],
            "seconds_per_epoch": float(statistics.median(e["seconds"] for e in history)),
            "scored": "the run's kept model at its own threshold (`cxr_core evaluate RUN --data DEV --split test`)",
            "final": {k: report[k] for k in ("accuracy", "sensitivity", "specificity", "auc", "macro_f1",
                                             "threshold", "confusion_matrix", "n")}}


def section_training(ctx) -> dict:
    dev = dev_folder(ctx.args)
    runs = []
    for repeat in range(1, ctx.args.repeats + 1):
        for side in SIDES:
            print(f"  repeat {repeat}/{ctx.args.repeats}: {SIDES[side]}", flush=True)
            runs.append(run_side(ctx, side, repeat, dev))
    study = registry.default_settings(registry.DEFAULT_MODEL, "study").to_dict()
    return {"test_data": common.project_relative(dev), "repeats": ctx.args.repeats, "order": list(SIDES),
            "seed_recipe": dict(study, **{k: getattr(ctx.args, k) for k in ("epochs", "image_size")
                                          if getattr(ctx.args, k)}),
            "runs": runs}

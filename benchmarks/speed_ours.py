"""Both sides of the training comparison: the product's own training job, scored on the dev half each epoch.

The child runs what `python -m cxr_core train --model MODEL --recipe RECIPE` runs (jobs.submit,
then train.run_job) and hands run_job one extra Keras callback that scores each epoch's model.
It skips only the CLI's worker lock (the run store is private to the benchmark). Ours is the
improved recipe; the study's side is `--recipe study` through the same code, so the two differ
only in their recipes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from speed_data import child_command, fresh
from speed_time_to_quality import dev_scores

import common


def product_predictions(settings, data_dir: str, dev_dir: str):
    """predict_dev and threshold_rule for dev_evaluation_callback, built from the product's own code.

    The validation split and its decoded images are the ones fit() made (same scan, same seed,
    same on-disk cache); the dev half is decoded by the same preprocessing at the run's size.
    """
    from cxr_core import data as data_mod
    from cxr_core import evaluate, pipeline
    from cxr_core.inference import predict_rows
    from cxr_core.train import prepare_data

    prepared = {}

    def ready():
        if not prepared:  # at the first epoch's end: fit() has already decoded the cache
            _, split, cache = prepare_data(settings, data_dir, echo=lambda *_: None)
            val = split[split.split == "val"]
            dev = data_mod.scan_folder(dev_dir, require_train=False).manifest
            dev = dev[dev.source_split == "test"]
            dev_cache = pipeline.build_cache(dev["path"].tolist(), settings.image_size)
            dev = pipeline.with_cache_rows(dev, dev_cache)
            prepared.update(val=(cache, val["row"], val["label"].to_numpy()),
                            dev=(dev_cache, dev["row"], dev["label"].to_numpy()))
        return prepared

    def predict_dev(model):
        cache, rows, labels = ready()["dev"]
        return labels, predict_rows(model, cache, rows)

    def threshold_rule(model):
        cache, rows, labels = ready()["val"]
        choice = evaluate.threshold_for(settings, labels, predict_rows(model, cache, rows))
        return choice["threshold"], choice["rule"]

    return predict_dev, threshold_rule


def product_train_child(spec: dict) -> None:
    """Child process: the product's training job (spec model and recipe) with the dev-half scoring callback."""
    from cxr_core import jobs, registry
    from cxr_core.store import RunStore
    from cxr_core.train import run_job

    settings = registry.default_settings(spec.get("model") or registry.DEFAULT_MODEL, spec.get("recipe") or "improved")
    if spec.get("epochs"):
        settings.epochs = spec["epochs"]
    store = RunStore(spec["runs"])
    run_id = jobs.submit(settings, spec["data"], store, start=False)
    print(f"run {run_id}: {settings.model}, {settings.epochs} epochs at {settings.image_size}px", flush=True)
    callbacks = []
    if spec.get("dev"):  # without it: the plain product run (the memory section's)
        callbacks.append(dev_evaluation_callback(*product_predictions(settings, spec["data"], spec["dev"]),
                                                 f"{settings.model} ({settings.recipe} recipe)"))
    state = run_job(run_id, store, echo=lambda line: print(line, flush=True), callbacks=callbacks)
    print(json.dumps({"event": "done", "ended": time.time(), "run": run_id, "state": state}), flush=True)


def dev_evaluation_callback(predict_dev, threshold_rule, label: str):
    """A Keras callback that scores each epoch's model on the dev half and prints one JSON line.

    predict_dev(model) -> (labels, probabilities); threshold_rule(model) -> (threshold, how it was chosen). The line carries `ended` (time.time()
    when the epoch, validation included, ended) and `eval_s`, so the parent can subtract the
    scoring from the wall time.
    """
    import keras

    class DevEvaluation(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs_seen, self.begun = 0, time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self.begun = time.time()

        def on_epoch_end(self, epoch, logs=None):
            ended = time.time()
            self.epochs_seen += 1
            labels, prob = predict_dev(self.model)
            threshold, rule = threshold_rule(self.model)
            row = {"event": "epoch", "side": label, "epoch": self.epochs_seen, "ended": ended,
                   "seconds": round(ended - self.begun, 3), "val_auc": (logs or {}).get("val_auc"),
                   "threshold_rule": rule, **dev_scores(labels, prob, threshold)}
            row["eval_s"] = round(time.time() - ended, 3)
            print(json.dumps(row), flush=True)

    return DevEvaluation()


def run_side(command: list[str], env: dict | None, echo: bool, require_epochs: bool = True) -> dict:
    """Run one side's child; returns its epoch events, the launch time and the child's totals."""
    events: list[dict] = []

    def on_line(line: str, at: float) -> None:
        if line.startswith('{"event"'):
            events.append(json.loads(line))

    launched = time.time()
    child = common.run_child(command, env=env, on_line=on_line, echo=echo)
    if child["rc"] != 0:
        raise RuntimeError(f"{command[-3] if '--child' in command else command[0]} failed: "
                           f"{' | '.join(child['lines'][-3:])}")
    epochs = [e for e in events if e["event"] == "epoch"]
    done = next((e for e in events if e["event"] == "done"), {})
    if not epochs and require_epochs:
        raise RuntimeError(f"the child reported no epochs: {' | '.join(child['lines'][-3:])}")
    return {"launched": launched, "epochs": epochs, "done": done, "wall_s": child["wall_s"],
            "peak_rss_mib": child["peak_rss_mib"]}


def train_product(ctx, epochs: int | None, tag: str, dev: Path | None, model: str | None = None,
                  recipe: str = "improved") -> dict:
    """One side, in a child with a cold private cache: decoding is part of its time, as on a first run.

    dev None: no scoring callback, the product's run exactly (no epoch events come back).
    """
    spec = {"data": str(ctx.data), "runs": str(ctx.work / f"runs-{tag}"), "epochs": epochs,
            "dev": None if dev is None else str(dev), "model": model, "recipe": recipe}
    side = run_side(child_command("product-train", spec), common.cli_env(CXR_CACHE_DIR=fresh(ctx.work / f"cache-{tag}")),
                    echo=not ctx.args.quiet, require_epochs=dev is not None)
    if side["done"].get("state") != "done":
        raise RuntimeError(f"the {recipe} recipe's training run ended {side['done'].get('state')!r}")
    from cxr_core.store import RunStore

    run = RunStore(spec["runs"]).get(side["done"]["run"])
    side.update(run=run.run_id, image_size=run.settings["image_size"], epochs_configured=run.settings["epochs"],
                epochs_run=len(run.history()))
    return side

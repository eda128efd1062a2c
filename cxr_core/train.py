"""Fit one study model: the body of a training job.

Run from the CLI (`python -m cxr_core train --data DIR --model regularized_cnn`)
or by the job worker for runs queued from the dashboard. It never runs inside
the Streamlit server. While it runs it rewrites status.json and history.json
atomically after each epoch (and status.json every few seconds within one),
so another process can watch. SIGTERM cancels: the current batch finishes,
the run is marked cancelled, and no model file appears.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
import traceback

import numpy as np

from . import data as data_mod
from . import evaluate, pipeline
from .config import TrainSettings, UserError
from .store import OWN, RunStore, atomic_write_csv, atomic_write_json, evaluation_files


class Cancelled(Exception):
    pass


class _CancelFlag:
    """Set by SIGTERM/SIGINT; checked between batches (TF cannot be interrupted mid-op safely)."""

    def __init__(self):
        self.set = False

    def install(self):
        def handler(signum, frame):
            self.set = True

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        return lambda: [signal.signal(s, h) for s, h in previous.items()]


def _progress_callback(store: RunStore, run_id: str, settings: TrainSettings, flag: _CancelFlag,
                       steps_per_epoch: int, phase_offset: int, history: list, echo):
    import keras

    class Progress(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.last_write = 0.0
            self.epoch_start = time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.time()

        def on_train_batch_end(self, batch, logs=None):
            if flag.set:
                self.model.stop_training = True
                raise Cancelled()
            now = time.time()
            if now - self.last_write > 2.0:  # throttle: a status write per batch would cost I/O
                self.last_write = now
                store.set_status(run_id, batch=batch + 1, steps_per_epoch=steps_per_epoch)

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": phase_offset + epoch + 1, "seconds": round(time.time() - self.epoch_start, 2)}
            row.update({k: float(v) for k, v in (logs or {}).items() if np.isscalar(v)})
            history.append(row)
            atomic_write_json(store.run_path(run_id) / "history.json", history)
            store.set_status(run_id, epoch=row["epoch"], batch=0)
            echo(
                f"epoch {row['epoch']}/{settings.epochs}  loss {row.get('loss', float('nan')):.4f}  "
                f"val_loss {row.get('val_loss', float('nan')):.4f}  val_auc {row.get('val_auc', float('nan')):.4f}  "
                f"{row['seconds']:.1f}s"
            )

    return Progress()


def prepare_data(settings: TrainSettings, data_dir, echo=print):
    """Scan, split by patient, decode to the cache; returns (split manifest, cache)."""
    scan = data_mod.scan_folder(data_dir)
    split = data_mod.assign_splits(scan.manifest, val_fraction=settings.val_fraction,
                                   test_fraction=settings.test_fraction, seed=settings.seed)
    echo(f"data: {len(split)} images in {scan.root}" + (" (SYNTHETIC demo set)" if scan.synthetic else ""))
    if scan.skipped:
        echo("skipped: " + ", ".join(f"{n} {reason}" for reason, n in scan.skipped.items()))
    started = time.time()
    cache = pipeline.build_cache(split["path"].tolist(), settings.image_size,
                                 progress=lambda done, total: echo(f"decoding images {done}/{total}"))
    echo(f"images ready in {time.time() - started:.1f}s")
    if cache.failed:
        echo(f"warning: {len(cache.failed)} unreadable images left out, e.g. {next(iter(cache.failed.values()))}")
    split = pipeline.readable(split, cache)
    for name in ("train", "val"):
        labels = set(split.loc[split.split == name, "label"])
        if len(labels) < 2:
            raise UserError(f"the {name} split has only one class after splitting; add images of both classes")
    return scan, split, cache


def predict_rows(model, cache, rows, batch_size: int = 64) -> np.ndarray:
    ds = pipeline.make_dataset(cache, rows, np.zeros(len(rows)), batch_size=batch_size, shuffle=False)
    probs = [np.asarray(model(x, training=False)).reshape(-1) for x, _ in ds]
    return np.concatenate(probs) if probs else np.zeros(0)


def device_strategy(echo=print):
    """Where to train: every GPU through MirroredStrategy when there are several,
    the one GPU when there is one (TensorFlow places ops on it by itself), else the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        echo(f"training on {strategy.num_replicas_in_sync} GPUs (MirroredStrategy)")
        return strategy, f"{len(gpus)} GPUs"
    echo("training on " + ("1 GPU" if gpus else "the CPU"))
    return tf.distribute.get_strategy(), "1 GPU" if gpus else "CPU"


def _compile(model, settings: TrainSettings, learning_rate: float, steps: int):
    import keras

    # Cosine decay: large steps early, small ones to settle; no plateau guessing.
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=settings.label_smoothing),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc"),
                 keras.metrics.Recall(name="sensitivity")],
    )


def fit(run_id: str, store: RunStore, echo=print, callbacks=()) -> None:
    """Train the queued run `run_id` to the end; raises Cancelled or any error.

    `callbacks`: extra Keras callbacks run after the job's own each epoch (the speed
    benchmark scores every epoch's model through one); the product passes none.
    """
    import keras

    from .models import build_model, unfreeze_top

    extra_callbacks = list(callbacks)
    run = store.get(run_id)
    settings = TrainSettings.from_dict(run.settings)
    keras.utils.set_random_seed(settings.seed)
    scan, split, cache = prepare_data(settings, run.settings["data_dir"], echo)
    recorded = split.drop(columns="row").assign(path=[os.path.relpath(p, scan.root) for p in split["path"]])
    atomic_write_csv(run.path / "split.csv", recorded)
    overlap = data_mod.patient_overlap(split)
    store.set_status(run_id, synthetic=scan.synthetic, patient_overlap=overlap,
                     counts={s: int((split.split == s).sum()) for s in ("train", "val", "test")})

    train, val = split[split.split == "train"], split[split.split == "val"]
    # Full batches only, unless the training set is smaller than one batch.
    whole = len(train) >= settings.batch_size
    train_ds = pipeline.make_dataset(cache, train["row"], train["label"], batch_size=settings.batch_size,
                                     shuffle=True, seed=settings.seed, drop_remainder=whole)
    val_ds = pipeline.make_dataset(cache, val["row"], val["label"], batch_size=64, shuffle=False)
    steps = len(train) // settings.batch_size if whole else 1
    weights = data_mod.class_weights(train["label"].to_numpy()) if settings.class_weighting else None

    strategy, device = device_strategy(echo)
    store.set_status(run_id, device=device)
    with strategy.scope():  # variables created here are mirrored across GPUs
        model = build_model(settings, steps_per_epoch=steps)
    flag = _CancelFlag()
    restore = flag.install()
    history: list[dict] = []
    try:
        phases = [(settings.epochs, settings.learning_rate, False)]
        if settings.model == "mobilenetv2_finetune":
            head_epochs = max(1, settings.epochs // 3)
            phases = [(head_epochs, settings.learning_rate * 10, False),
                      (settings.epochs - head_epochs, settings.learning_rate, True)]
        done_epochs = 0
        for epochs, learning_rate, unfreeze in phases:
            if epochs <= 0:
                continue
            with strategy.scope():
                if unfreeze:
                    echo(f"fine-tuning: {unfreeze_top(model)} layers unfrozen")
                _compile(model, settings, learning_rate, steps * epochs)
            callbacks = [_progress_callback(store, run_id, settings, flag, steps, done_epochs, history, echo)]
            # Curves in the tool people already know. tf.summary needs the tensorboard package, which
            # TensorFlow 2.21 no longer installs: without it a run trains as before, without curves.
            if importlib.util.find_spec("tensorboard") is not None:
                callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.path / "tensorboard")))
            if settings.early_stopping_patience > 0:
                callbacks.append(keras.callbacks.EarlyStopping(
                    monitor="val_auc", mode="max", patience=settings.early_stopping_patience,
                    restore_best_weights=True, start_from_epoch=1))
            callbacks.extend(extra_callbacks)
            # shuffle=False: the tf.data pipeline already reshuffles every epoch.
            model.fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=weights,
                      callbacks=callbacks, verbose=0, shuffle=False)
            done_epochs = len(history)
    finally:
        restore()
    if flag.set:
        raise Cancelled()

    val_prob = predict_rows(model, cache, val["row"])
    choice = evaluate.choose_threshold(val["label"].to_numpy(), val_prob, settings.target_sensitivity,
                                       rule=settings.threshold_rule)
    atomic_write_json(run.path / "threshold.json", choice)
    echo(f"threshold {choice['threshold']:.3f}: {choice['rule']}")
    for name in ("val", "test"):
        part = split[split.split == name]
        if part.empty:
            continue
        prob = val_prob if name == "val" else predict_rows(model, cache, part["row"])
        write_evaluation(run.path, name, part, prob, choice["threshold"], scan.root)
    from . import ood  # fitted on this run's training images, thresholds on validation

    ood.fit_run(run.path, model, cache, train["row"], val["row"], val["path"], seed=settings.seed, echo=echo)
    # Written last: a visible model.keras means the run is complete.
    tmp = run.path / f".model-{os.getpid()}.keras"
    try:
        model.save(tmp)
        os.replace(tmp, run.path / "model.keras")
    finally:
        tmp.unlink(missing_ok=True)


def write_evaluation(run_path, split_name: str, part, prob: np.ndarray, threshold: float, root,
                     source: str = OWN) -> dict:
    """Score and store one split's predictions; intervals resample patients, not images."""
    result = evaluate.evaluate_predictions(part["label"].to_numpy(), prob, threshold,
                                           groups=part["patient_id"].to_numpy())
    result.update(run=run_path.name, split=split_name, data_dir=str(root), source=source)
    json_path, csv_path = evaluation_files(run_path, split_name, source)
    atomic_write_json(json_path, result)
    predictions = part[["path", "label", "patient_id", "kind"]].copy()
    predictions["path"] = [os.path.relpath(p, root) if os.path.isabs(p) else p for p in predictions["path"]]
    predictions["probability"] = prob
    predictions["predicted"] = (prob >= threshold).astype(int)
    atomic_write_csv(csv_path, predictions)
    return result


def run_job(run_id: str, store: RunStore, echo=print, callbacks=()) -> str:
    """Train a run and record how it ended: done, cancelled or failed. Returns the state."""
    started = time.time()
    store.set_status(run_id, state="running", pid=os.getpid(), started=started, epoch=0)
    try:
        fit(run_id, store, echo, callbacks)
    except Cancelled:
        store.set_status(run_id, state="cancelled", finished=time.time(), error="stopped by the user")
        echo(f"run {run_id} cancelled")
        return "cancelled"
    except BaseException as error:  # a crash of any kind must still mark the run
        message = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
        store.set_status(run_id, state="failed", finished=time.time(), error=message[:2000],
                         traceback=traceback.format_exc()[-4000:])
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        if not isinstance(error, UserError):
            echo(traceback.format_exc())
        echo(f"run {run_id} failed: {message}")
        return "failed"
    store.set_status(run_id, state="done", finished=time.time(), duration=time.time() - started)
    return "done"

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
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import data as data_mod
from . import evaluate, pipeline, registry
from .cancellation import Cancellation, Cancelled, on_signals
from .config import TrainSettings, UserError
from .inference import predict_rows, write_evaluation
from .store import RunState, RunStore, atomic_save_model, atomic_write_csv, atomic_write_json


def _progress_callback(job: _Job, steps_per_epoch: int, phase_offset: int):
    import keras

    store, run_id, settings, cancel, history, echo = (job.store, job.run_id, job.settings, job.cancel,
                                                      job.history, job.echo)

    class Progress(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.last_write = 0.0
            self.epoch_start = time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.time()

        def on_train_batch_end(self, batch, logs=None):
            if cancel.requested:  # a batch boundary: the one place a Stop can end fit safely
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
                                   test_fraction=settings.test_fraction,
                                   seed=settings.seed if settings.split_seed is None else settings.split_seed)
    echo(f"data: {len(split)} images in {scan.root}" + (" (SYNTHETIC demo set)" if scan.synthetic else ""))
    if scan.skipped:
        echo("skipped: " + ", ".join(f"{n} {reason}" for reason, n in scan.skipped.items()))
    started = time.time()
    cache = pipeline.build_cache(split["path"].tolist(), settings.image_size,
                                 progress=lambda done, total: echo(f"decoding images {done}/{total}"))
    echo(f"images ready in {time.time() - started:.1f}s")
    if cache.failed:
        echo(f"warning: {len(cache.failed)} unreadable images left out, e.g. {next(iter(cache.failed.values()))}")
    split = pipeline.with_cache_rows(split, cache)
    for name in ("train", "val"):
        labels = set(split.loc[split.split == name, "label"])
        if len(labels) < 2:
            raise UserError(f"the {name} split has only one class after splitting; add images of both classes")
    return scan, split, cache


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

    # Cosine decay: large steps early, small ones to settle; no plateau guessing. The study's
    # recipe keeps Adam's rate constant, as the Keras tutorial does.
    rate = (keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
            if settings.lr_schedule == "cosine" else learning_rate)
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=settings.label_smoothing),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc"),
                 keras.metrics.Recall(name="sensitivity")],
    )


def phases(settings: TrainSettings) -> list[tuple[int, float, str | None]]:
    """(epochs, learning rate, layer to unfreeze from or None) per phase of fit.

    A model that fine-tunes (ModelSpec.finetune_from) first trains its new head for a
    third of the epochs at ten times the rate, then its top blocks at the rate."""
    finetune_from = registry.get(settings.model).finetune_from
    if not finetune_from:
        return [(settings.epochs, settings.learning_rate, None)]
    head_epochs = max(1, settings.epochs // 3)
    return [(head_epochs, settings.learning_rate * 10, None),
            (settings.epochs - head_epochs, settings.learning_rate, finetune_from)]


@dataclass
class _Job:
    """What one training job carries between its steps."""

    run_id: str
    store: RunStore
    settings: TrainSettings
    echo: Callable
    cancel: Cancellation
    scan: object = None
    split: pd.DataFrame = None
    cache: object = None
    history: list = field(default_factory=list)

    @property
    def path(self):
        return self.store.run_path(self.run_id)

    def part(self, name: str) -> pd.DataFrame:
        return self.split[self.split.split == name]


def fit_rows(split: pd.DataFrame, settings: TrainSettings) -> pd.DataFrame:
    """The rows the model is fitted on: train, and validation too when the recipe trains on it."""
    kept = ("train", "val") if settings.train_on_validation else ("train",)
    return split[split.split.isin(kept)]


def _load_data(job: _Job) -> None:
    run = job.store.get(job.run_id)
    job.scan, job.split, job.cache = prepare_data(job.settings, run.settings["data_dir"], job.echo)
    recorded = job.split.drop(columns="row").assign(
        path=[os.path.relpath(p, job.scan.root) for p in job.split["path"]])
    atomic_write_csv(job.path / "split.csv", recorded)
    job.store.set_status(job.run_id, synthetic=job.scan.synthetic, patient_overlap=data_mod.patient_overlap(job.split),
                         counts={s: int((job.split.split == s).sum()) for s in ("train", "val", "test")})


def _callbacks(job: _Job, steps: int, done_epochs: int, extra) -> list:
    import keras

    callbacks = [_progress_callback(job, steps, done_epochs)]
    # Curves in the tool people already know. tf.summary needs the tensorboard package, which
    # TensorFlow 2.21 no longer installs: without it a run trains as before, without curves.
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(job.path / "tensorboard")))
    if job.settings.early_stopping_patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=job.settings.early_stopping_patience,
            restore_best_weights=True, start_from_epoch=1))
    return callbacks + list(extra)


def _train_model(job: _Job, extra_callbacks):
    from .models import build_model, unfreeze_top

    settings = job.settings
    train, val = fit_rows(job.split, settings), job.part("val")
    # Full batches only, unless the training set is smaller than one batch.
    whole = len(train) >= settings.batch_size
    train_ds = pipeline.make_dataset(job.cache, train["row"], train["label"], batch_size=settings.batch_size,
                                     shuffle=True, seed=settings.seed, drop_remainder=whole)
    val_ds = pipeline.make_dataset(job.cache, val["row"], val["label"], batch_size=64, shuffle=False)
    steps = len(train) // settings.batch_size if whole else 1
    weights = data_mod.class_weights(train["label"].to_numpy()) if settings.class_weighting else None
    strategy, device = device_strategy(job.echo)
    job.store.set_status(job.run_id, device=device)
    with strategy.scope():  # variables created here are mirrored across GPUs
        model = build_model(settings, steps_per_epoch=steps)
    with job.cancel.deferred():
        for epochs, learning_rate, unfreeze_from in phases(settings):
            if epochs <= 0:
                continue
            with strategy.scope():
                if unfreeze_from:
                    job.echo(f"fine-tuning: {unfreeze_top(model, unfreeze_from)} layers unfrozen")
                _compile(model, settings, learning_rate, steps * epochs)
            # shuffle=False: the tf.data pipeline already reshuffles every epoch.
            model.fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=weights, verbose=0,
                      callbacks=_callbacks(job, steps, len(job.history), extra_callbacks), shuffle=False)
    return model


def _choose_threshold_and_evaluate(job: _Job, model) -> None:
    val = job.part("val")
    val_prob = predict_rows(model, job.cache, val["row"])
    choice = evaluate.threshold_for(job.settings, val["label"].to_numpy(), val_prob)
    atomic_write_json(job.path / "threshold.json", choice)
    job.echo(f"threshold {choice['threshold']:.3f}: {choice['rule']}")
    for name in ("val", "test"):
        part = job.part(name)
        if not part.empty:
            prob = val_prob if name == "val" else predict_rows(model, job.cache, part["row"])
            write_evaluation(job.path, name, part, prob, choice["threshold"], job.scan.root)


def _save_model(job: _Job, model) -> None:
    atomic_save_model(model, job.path / "model.keras")  # written last: a visible model means a finished run


def fit(run_id: str, store: RunStore, echo=print, callbacks=(), cancel: Cancellation | None = None) -> None:
    """Train the queued run `run_id` to the end; raises Cancelled or any error.

    `cancel`: the job's Cancellation (cancellation.on_signals); a Stop during the
    epochs takes effect at the next batch boundary.

    `callbacks`: extra Keras callbacks run after the job's own each epoch (the speed
    benchmark scores every epoch's model through one); the product passes none.
    """
    import keras

    from . import ood  # fitted on this run's training images, thresholds on validation

    settings = TrainSettings.from_dict(store.get(run_id).settings)
    keras.utils.set_random_seed(settings.seed)
    job = _Job(run_id, store, settings, echo, cancel or Cancellation())
    _load_data(job)
    model = _train_model(job, callbacks)
    _choose_threshold_and_evaluate(job, model)
    ood.fit_run(job.path, model, job.cache, job.part("train")["row"], job.part("val")["row"],
                job.part("val")["path"], seed=settings.seed, echo=echo)
    _save_model(job, model)


def run_job(run_id: str, store: RunStore, echo=print, callbacks=()) -> str:
    """Train a run and record how it ended: done, cancelled or failed. Returns the state.

    SIGTERM and SIGINT cancel it at any stage (cancellation.on_signals)."""
    started = time.time()
    try:
        with on_signals() as cancel:
            store.set_status(run_id, state=RunState.RUNNING, pid=os.getpid(), started=started, epoch=0)
            fit(run_id, store, echo, callbacks, cancel)
    except Cancelled:
        store.set_status(run_id, state=RunState.CANCELLED, finished=time.time(), error="stopped by the user")
        echo(f"run {run_id} cancelled")
        return RunState.CANCELLED
    except BaseException as error:  # a crash of any kind must still mark the run
        message = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
        store.set_status(run_id, state=RunState.FAILED, finished=time.time(), error=message[:2000],
                         traceback=traceback.format_exc()[-4000:])
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        if not isinstance(error, UserError):
            echo(traceback.format_exc())
        echo(f"run {run_id} failed: {message}")
        return RunState.FAILED
    store.set_status(run_id, state=RunState.DONE, finished=time.time(), duration=time.time() - started)
    return RunState.DONE

"""The seed study's two recipes as it ran them, for the training section to time against ours.

Both read 180x180 RGB through keras.utils.image_dataset_from_directory (speed_data.seed_dataset),
train with Adam 1e-3 for 10 epochs and call PNEUMONIA at probability 0.5:
  baseline     Rescaling, 3 x (Conv2D + MaxPool), Flatten, Dense 128, Dense out
  regularized  the same with RandomFlip/RandomRotation/RandomZoom in front, BatchNorm after every
               convolution and Dropout 0.5 before the output (the seed's best recipe)
The seed's exact augmentation factors are not in this repository; 0.1 rotation and zoom with a
horizontal flip are the Keras tutorial's, which the seed's description follows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from speed_data import SEED_RECIPE, seed_dataset
from speed_time_to_quality import dev_scores

SEED_MODELS = ("regularized", "baseline")


def seed_model(kind: str):
    import keras
    from keras import layers

    size = SEED_RECIPE["image_size"]
    inputs = keras.Input((size, size, 3))
    x = inputs
    if kind == "regularized":
        x = layers.RandomFlip("horizontal")(x)
        x = layers.RandomRotation(0.1)(x)
        x = layers.RandomZoom(0.1)(x)
    x = layers.Rescaling(1 / 255)(x)
    for filters in (32, 64, 128):
        if kind == "regularized":
            x = layers.Conv2D(filters, 3, padding="same")(x)
            x = layers.ReLU()(layers.BatchNormalization()(x))
        else:
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Dense(128, activation="relu")(layers.Flatten()(x))
    if kind == "regularized":
        x = layers.Dropout(0.5)(x)
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid")(x))


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


def seed_predictions(dev_dir: Path):
    """(labels, probabilities) of a model on the dev half, read by the seed's own loader."""
    loaded = []

    def predict(model):
        if not loaded:  # listed at the first scoring, so that its time is left out with the scoring's
            loaded.append(seed_dataset(dev_dir, shuffle=False))
        labels, probs = [], []
        for x, y in loaded[0]:
            labels.append(np.asarray(y).reshape(-1))
            probs.append(np.asarray(model(x, training=False)).reshape(-1))
        return np.concatenate(labels), np.concatenate(probs)

    return predict


def seed_train_child(spec: dict) -> None:
    """Child process: one seed recipe, scored on the dev half after every epoch."""
    import keras

    keras.utils.set_random_seed(spec["seed"])
    train, val = seed_dataset(Path(spec["train"]), True, spec["seed"]), seed_dataset(Path(spec["val"]), False)
    model = seed_model(spec["kind"])
    model.compile(optimizer=keras.optimizers.Adam(SEED_RECIPE["learning_rate"]), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    fixed = SEED_RECIPE["threshold"]
    callback = dev_evaluation_callback(seed_predictions(Path(spec["dev"])), lambda model: (fixed, "fixed 0.5"),
                                       f"seed {spec['kind']}")
    model.fit(train, validation_data=val, epochs=spec["epochs"], callbacks=[callback], verbose=0)
    print(json.dumps({"event": "done", "ended": time.time()}), flush=True)

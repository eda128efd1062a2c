"""From a manifest to batches: decode once, cache to a file, stream with tf.data.

Every image goes through `images.load_for_model` (the one decoder and the one
preprocessing step) exactly once per (file list, image size); the resulting
uint8 arrays are written to a flat file under the cache folder. Epochs then
read rows from that file with `os.pread`, so memory stays bounded however
large the data set is (a 100,000-image set streams from disk the same way),
and the OS page cache makes small sets as fast as RAM.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import images
from .config import cache_dir
from .data import fingerprint
from .store import atomic_write_json


@dataclass
class ImageCache:
    """Preprocessed images of a manifest, one (S, S) uint8 row per image, on disk."""

    path: Path
    image_size: int
    count: int
    failed: dict[str, str]  # file path -> reason, for images that could not be decoded

    @property
    def row_bytes(self) -> int:
        return self.image_size * self.image_size

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows -> (n, S, S, 1) uint8, read with pread so nothing stays mapped."""
        out = np.empty((len(rows), self.image_size, self.image_size, 1), dtype=np.uint8)
        flat = out.reshape(len(rows), -1)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i, row in enumerate(rows):
                data = os.pread(fd, self.row_bytes, int(row) * self.row_bytes)
                flat[i] = np.frombuffer(data, dtype=np.uint8)
        finally:
            os.close(fd)
        return out


def build_cache(paths: list[str], image_size: int, *, workers: int | None = None, progress=None,
                occlusion: str | None = None) -> ImageCache:
    """Decode and preprocess `paths` into a cache file (reused when files are unchanged).

    Unreadable images become black rows and are listed in `failed`; callers
    drop them, so one corrupt file does not stop a training run. `occlusion`
    (images.OCCLUSIONS) is part of the key: occluded pixels never pass for plain ones.
    """
    occlusion_key = f"|occlude-{occlusion}" if occlusion else ""  # plain caches keep their old keys
    key = fingerprint(paths, image_size, images.PREPROCESS_VERSION + occlusion_key)
    folder = cache_dir() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    data_path = folder / f"{key}-{image_size}.u8"
    meta_path = folder / f"{key}-{image_size}.json"
    if data_path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("count") == len(paths):
                return ImageCache(data_path, image_size, len(paths), meta.get("failed", {}))
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below

    row_bytes = image_size * image_size
    failed: dict[str, str] = {}
    tmp_path = data_path.with_name(f"{data_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    done = 0
    lock = threading.Lock()

    def load(index_path: tuple[int, str]) -> tuple[int, bytes]:
        nonlocal done
        index, path = index_path
        try:
            pixels = images.load_for_model(path, image_size, occlusion=occlusion)
            data = pixels.tobytes()
        except images.ImageDecodeError as error:
            failed[path] = str(error)
            data = bytes(row_bytes)
        with lock:
            done += 1
            if progress is not None and done % 256 == 0:
                progress(done, len(paths))
        return index, data

    # Pillow releases the GIL while decoding, so threads use every core.
    workers = workers or max(2, os.cpu_count() or 2)
    pool = ThreadPoolExecutor(workers)
    try:
        with open(tmp_path, "wb") as out:
            for index, data in pool.map(load, enumerate(paths)):
                out.seek(index * row_bytes)
                out.write(data)
        os.replace(tmp_path, data_path)
    finally:
        # On an error or a cancel (SIGTERM raises in this thread) drop the images not
        # yet decoded instead of decoding the whole set first.
        pool.shutdown(wait=True, cancel_futures=True)
        if tmp_path.exists():
            tmp_path.unlink()
    atomic_write_json(meta_path, {"count": len(paths), "image_size": image_size, "failed": failed})
    return ImageCache(data_path, image_size, len(paths), failed)


def make_dataset(cache: ImageCache, rows: np.ndarray, labels: np.ndarray, *, batch_size: int,
                 shuffle: bool, seed: int = 0, drop_remainder: bool = False):
    """A tf.data pipeline over cache rows: shuffle, batch, read, prefetch.

    drop_remainder leaves out the last, partial batch: for training, where a
    batch of a few images gives BatchNorm noisy statistics (with reshuffling,
    each epoch leaves out different images).
    """
    import tensorflow as tf

    size = cache.image_size
    rows = np.asarray(rows, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.float32)
    ds = tf.data.Dataset.from_tensor_slices((rows, labels))
    if shuffle:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def read_batch(batch_rows, batch_labels):
        pixels = tf.numpy_function(cache.read, [batch_rows], tf.uint8)
        pixels = tf.ensure_shape(pixels, [None, size, size, 1])
        return tf.cast(pixels, tf.float32), tf.reshape(batch_labels, [-1, 1])

    ds = ds.map(read_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    return ds.prefetch(tf.data.AUTOTUNE)


def with_cache_rows(manifest: pd.DataFrame, cache: ImageCache) -> pd.DataFrame:
    """Manifest rows whose image decoded, with a `row` column into the cache."""
    frame = manifest.reset_index(drop=True).copy()
    frame["row"] = np.arange(len(frame))
    if cache.failed:
        frame = frame[~frame["path"].isin(cache.failed.keys())]
    return frame

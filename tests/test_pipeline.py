"""Contracts of cxr_core.pipeline: decode once into a reusable cache, invalidate it when a file
changes, and stream exactly those pixels as float32 batches."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from cxr_core import data, images, pipeline

SIZE = 48


@pytest.fixture
def files(demo_dir, tmp_path) -> list[str]:
    """A private copy of a few demo images (tests change files; the shared demo set must not)."""
    sources = [path for name in ("NORMAL", "PNEUMONIA") for path in sorted((demo_dir / "train" / name).glob("*.jpeg"))[:5]]
    out = []
    for src in sources:
        dest = tmp_path / src.name
        shutil.copy(src, dest)
        out.append(str(dest))
    return out


@pytest.fixture
def count_decodes(monkeypatch):
    calls: list[str] = []
    real = images.load_for_model

    def counting(source, image_size, name=None, **options):
        calls.append(str(source))
        return real(source, image_size, name=name, **options)

    monkeypatch.setattr(images, "load_for_model", counting)
    return calls


def test_cache_is_reused_without_decoding_again(files, count_decodes):
    first = pipeline.build_cache(files, SIZE)
    assert sorted(count_decodes) == sorted(files)
    count_decodes.clear()
    second = pipeline.build_cache(files, SIZE)
    assert count_decodes == []
    assert second.path == first.path and second.count == len(files) and second.failed == {}
    # Another size is another cache.
    pipeline.build_cache(files, SIZE + 16)
    assert len(count_decodes) == len(files)


def test_cache_is_rebuilt_when_a_file_changes(files, count_decodes):
    before = pipeline.build_cache(files, SIZE)
    old_row = before.read(np.array([0]))[0].copy()
    # Replace the first image with another one (other content, other size), as an edit would.
    shutil.copy(files[-1], files[0])
    stat = os.stat(files[0])
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    count_decodes.clear()
    after = pipeline.build_cache(files, SIZE)
    assert after.path != before.path
    assert files[0] in count_decodes
    new_row = after.read(np.array([0]))[0]
    assert np.array_equal(new_row, images.load_for_model(files[-1], SIZE))
    assert not np.array_equal(new_row, old_row)


def test_cache_rows_equal_the_decoder_output(files):
    cache = pipeline.build_cache(files, SIZE)
    rows = cache.read(np.arange(len(files)))
    assert rows.shape == (len(files), SIZE, SIZE, 1) and rows.dtype == np.uint8
    for i, path in enumerate(files):
        assert np.array_equal(rows[i], images.load_for_model(path, SIZE)), path
    # Reading rows in any order gives the same pixels.
    assert np.array_equal(cache.read(np.array([3, 0]))[0], rows[3])


def test_unreadable_files_are_listed_and_dropped(files, tmp_path):
    bad = tmp_path / "IM-0000-0001.jpeg"
    bad.write_bytes(b"not a jpeg")
    paths = files[:3] + [str(bad)] + files[3:]
    cache = pipeline.build_cache(paths, SIZE)
    assert list(cache.failed) == [str(bad)] and "IM-0000-0001.jpeg" in cache.failed[str(bad)]
    import pandas as pd

    manifest = pd.DataFrame({"path": paths, "label": [0] * len(paths)}, index=np.arange(100, 100 + len(paths)))
    kept = pipeline.with_cache_rows(manifest, cache)
    assert str(bad) not in set(kept.path) and len(kept) == len(paths) - 1
    for row in kept.itertuples():
        assert paths[row.row] == row.path  # `row` indexes the cache in the order it was built


def test_make_dataset_yields_float32_batches_with_labels(files):
    cache = pipeline.build_cache(files, SIZE)
    rows = np.arange(len(files))
    labels = np.array([0, 1] * (len(files) // 2))
    ds = pipeline.make_dataset(cache, rows, labels, batch_size=4, shuffle=False)
    batches = list(ds)
    assert [tuple(x.shape) for x, _ in batches] == [(4, SIZE, SIZE, 1), (4, SIZE, SIZE, 1), (2, SIZE, SIZE, 1)]
    assert all(x.dtype.name == "float32" and y.dtype.name == "float32" for x, y in batches)
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert y.shape == (len(files), 1) and np.array_equal(y[:, 0], labels)
    assert np.array_equal(x, cache.read(rows).astype(np.float32))  # 0..255, scaling is inside the models
    assert x.max() > 1.0


def test_shuffled_dataset_keeps_each_image_with_its_label(files):
    cache = pipeline.build_cache(files, SIZE)
    rows = np.arange(len(files))
    ds = pipeline.make_dataset(cache, rows, rows.astype(float), batch_size=3, shuffle=True, seed=1)
    seen = []
    reference = cache.read(rows).astype(np.float32)
    for x, y in ds:
        for image, label in zip(x.numpy(), y.numpy()[:, 0]):
            assert np.array_equal(image, reference[int(label)])
            seen.append(int(label))
    assert sorted(seen) == list(rows) and seen != list(rows)


def test_training_batches_can_leave_out_the_partial_last_batch(files):
    cache = pipeline.build_cache(files, SIZE)
    rows = np.arange(len(files))
    assert len(rows) % 3  # else there is no partial batch to leave out
    full = [len(y) for _, y in pipeline.make_dataset(cache, rows, rows.astype(float), batch_size=3,
                                                     shuffle=True, seed=1, drop_remainder=True)]
    assert full == [3] * (len(rows) // 3)
    every = [len(y) for _, y in pipeline.make_dataset(cache, rows, rows.astype(float), batch_size=3, shuffle=False)]
    assert sum(every) == len(rows) and every[-1] == len(rows) % 3


def test_cache_is_rebuilt_when_preprocessing_changes(files, count_decodes, monkeypatch):
    first = pipeline.build_cache(files, SIZE)
    count_decodes.clear()
    monkeypatch.setattr(images, "PREPROCESS_VERSION", images.PREPROCESS_VERSION + "-changed")
    second = pipeline.build_cache(files, SIZE)
    assert second.path != first.path
    assert sorted(count_decodes) == sorted(files)  # old pixels are never served after a change


def test_occlusion_goes_through_the_one_preprocessing_path_and_the_cache_key(demo_dir):
    paths = [str(p) for p in sorted((demo_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[:3]]
    plain = pipeline.build_cache(paths, 48)
    occluded = pipeline.build_cache(paths, 48, occlusion="lungs")
    assert plain.path != occluded.path
    assert plain.path.name.startswith(data.fingerprint(paths, 48, images.PREPROCESS_VERSION))  # old keys kept
    rows = np.arange(3)
    expected = np.stack([images.load_for_model(p, 48, occlusion="lungs") for p in paths])
    np.testing.assert_array_equal(occluded.read(rows), expected)
    assert not np.array_equal(plain.read(rows), occluded.read(rows))

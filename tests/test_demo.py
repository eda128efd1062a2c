"""Contract tests for the synthetic demo data set (cxr_core.demo).

The default set (300 images at 192 px) is written once per module; the tests
that need several sets use tiny ones so the file stays fast.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_core import config, demo
from cxr_core.demo import SYNTHETIC_MARKER, ensure_demo_dataset, is_synthetic, write_demo_dataset

NORMAL_NAME = re.compile(r"^(NORMAL2-)?IM-(\d{4})-0001\.jpeg$")
PNEUMONIA_NAME = re.compile(r"^person(\d+)_(bacteria|virus)_(\d+)\.jpeg$")
TINY = dict(n_normal=6, n_pneumonia=8, image_size=48)


def patient_id(path: Path) -> str:
    """The patient a file belongs to, the way the real set's names encode it."""
    match = PNEUMONIA_NAME.match(path.name)
    return f"person{match.group(1)}" if match else path.name.rsplit("-", 1)[0]


def images(root: Path, split: str = "*", cls: str = "*") -> list[Path]:
    return sorted(root.glob(f"{split}/{cls}/*.jpeg"))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def load(paths: list[Path], side: int) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).resize((side, side), Image.BILINEAR), np.float32) / 255 for p in paths])


def labels(paths: list[Path]) -> np.ndarray:
    return np.array([p.parent.name == "PNEUMONIA" for p in paths], dtype=int)


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "demo")


def test_layout_counts_and_image_format(default_demo):
    assert sorted(p.name for p in default_demo.iterdir()) == [SYNTHETIC_MARKER, "test", "train"]
    for cls, wanted in (("NORMAL", 150), ("PNEUMONIA", 150)):
        train, test = images(default_demo, "train", cls), images(default_demo, "test", cls)
        assert len(train) + len(test) == wanted
        assert 0.15 <= len(test) / wanted <= 0.25  # about 80/20
    for path in images(default_demo)[::10]:
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "L", (192, 192))


def test_file_names_follow_the_kaggle_patterns(default_demo):
    normal = [p.name for p in images(default_demo, cls="NORMAL")]
    pneumonia = [p.name for p in images(default_demo, cls="PNEUMONIA")]
    assert all(NORMAL_NAME.match(n) for n in normal)
    assert any(n.startswith("NORMAL2-") for n in normal) and any(n.startswith("IM-") for n in normal)
    assert len({NORMAL_NAME.match(n).group(2) for n in normal}) == len(normal)  # one image per patient
    assert all(PNEUMONIA_NAME.match(n) for n in pneumonia)
    persons: dict[str, set[str]] = {}
    for n in pneumonia:
        person, kind, _ = PNEUMONIA_NAME.match(n).groups()
        persons.setdefault(person, set()).add(kind)
    assert all(len(kinds) == 1 for kinds in persons.values())
    sizes = [sum(PNEUMONIA_NAME.match(n).group(1) == person for n in pneumonia) for person in persons]
    assert max(sizes) >= 2 and min(sizes) == 1 and max(sizes) <= 3
    bacteria = sum("_bacteria_" in n for n in pneumonia) / len(pneumonia)
    assert 0.5 <= bacteria <= 0.8  # about two thirds


def test_no_patient_straddles_train_and_test(default_demo):
    train = {patient_id(p) for p in images(default_demo, "train")}
    test = {patient_id(p) for p in images(default_demo, "test")}
    assert train and test and not train & test


def test_images_of_one_person_look_alike(default_demo):
    by_person: dict[str, list[Path]] = {}
    for path in images(default_demo, cls="PNEUMONIA"):
        by_person.setdefault(patient_id(path), []).append(path)
    pairs = [ps[:2] for ps in by_person.values() if len(ps) >= 2]
    singles = [ps[0] for ps in by_person.values()]
    x = load(singles + [p for pair in pairs for p in pair], 32).reshape(-1, 32 * 32)
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    same = x[len(singles) :: 2] * x[len(singles) + 1 :: 2]
    others = x[: len(singles) - 1] * x[1 : len(singles)]
    assert same.mean() > others.mean() + 0.02


def test_marker_says_synthetic_and_is_found_from_split_and_class_folders(default_demo, tmp_path):
    text = (default_demo / SYNTHETIC_MARKER).read_text()
    assert "synthetic" in text.lower() and "cxr_core.demo" in text and "not for any medical use" in text
    assert is_synthetic(default_demo)
    assert is_synthetic(default_demo / "train") and is_synthetic(default_demo / "test" / "NORMAL")
    assert not is_synthetic(tmp_path)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = tree_bytes(write_demo_dataset(tmp_path / "a", seed=3, **TINY))
    again = tree_bytes(write_demo_dataset(tmp_path / "b", seed=3, **TINY))
    other = tree_bytes(write_demo_dataset(tmp_path / "c", seed=4, **TINY))
    assert first == again
    first_images = {k: v for k, v in first.items() if k.endswith(".jpeg")}
    other_images = {k: v for k, v in other.items() if k.endswith(".jpeg")}
    assert first_images != other_images


def test_failed_generation_leaves_no_folder_behind(tmp_path, monkeypatch):
    real_draw, calls = demo._draw, []

    def draw_then_fail(*args):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return real_draw(*args)

    monkeypatch.setattr(demo, "_draw", draw_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_demo_dataset(tmp_path / "demo", **TINY)
    assert list(tmp_path.iterdir()) == []  # neither out_dir nor a temp folder


def test_rewrite_replaces_a_demo_but_refuses_other_folders(tmp_path):
    out = write_demo_dataset(tmp_path / "demo", seed=1, **TINY)
    write_demo_dataset(out, seed=2, **TINY)
    assert "seed=2" in (out / SYNTHETIC_MARKER).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]

    real = tmp_path / "real"
    (real / "train" / "NORMAL").mkdir(parents=True)
    (real / "train" / "NORMAL" / "IM-0001-0001.jpeg").write_bytes(b"a person's x-ray")
    for call in (lambda: write_demo_dataset(real, **TINY), lambda: ensure_demo_dataset(real)):
        with pytest.raises(config.UserError, match="not a demo data set"):
            call()
    assert (real / "train" / "NORMAL" / "IM-0001-0001.jpeg").read_bytes() == b"a person's x-ray"


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError):
        write_demo_dataset(tmp_path / "demo", n_normal=0)
    assert not (tmp_path / "demo").exists()


def test_ensure_generates_once_in_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "_DEFAULTS", dict(seed=0, **TINY))
    out = ensure_demo_dataset()
    assert out == config.demo_data_dir() and is_synthetic(out)
    before = tree_bytes(out)

    def must_not_run(*args, **kwargs):
        raise AssertionError("regenerated an existing demo")

    monkeypatch.setattr(demo, "_write_tree", must_not_run)
    assert ensure_demo_dataset() == out and tree_bytes(out) == before


def test_ensure_fills_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "_DEFAULTS", dict(seed=0, **TINY))
    (tmp_path / "demo").mkdir()
    assert is_synthetic(ensure_demo_dataset(tmp_path / "demo"))


def test_concurrent_ensure_one_wins_both_get_a_complete_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "_DEFAULTS", dict(seed=0, **TINY))
    # Hold both builders until each has a finished temp folder, so the renames really race.
    barrier, real_write_tree = threading.Barrier(2, timeout=30), demo._write_tree

    def write_tree_then_wait(*args, **kwargs):
        real_write_tree(*args, **kwargs)
        barrier.wait()

    monkeypatch.setattr(demo, "_write_tree", write_tree_then_wait)
    out, results, errors = tmp_path / "demo", [], []

    def call():
        try:
            results.append(ensure_demo_dataset(out))
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and results == [out, out]
    assert is_synthetic(out) and len(images(out)) == TINY["n_normal"] + TINY["n_pneumonia"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # the loser's copy is gone


def test_mean_brightness_cannot_tell_the_classes_apart(default_demo):
    paths = images(default_demo)
    brightness, y = load(paths, 64).mean(axis=(1, 2)), labels(paths)
    # The best single threshold, chosen with hindsight on all images: an upper bound.
    best = max(max(np.mean((brightness > t) == y), np.mean((brightness <= t) == y)) for t in brightness)
    assert best <= 0.8


def test_pixels_carry_a_learnable_signal(default_demo):
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = images(default_demo, "train"), images(default_demo, "test")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    model.fit(load(train, 32).reshape(len(train), -1), labels(train))
    accuracy = model.score(load(test, 32).reshape(len(test), -1), labels(test))
    assert accuracy >= 0.75  # held-out patients; chance is about 0.5

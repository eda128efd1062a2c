"""The synthetic demo data set: the dashboard's offline default.

Drawn shapes that look like pediatric chest X-rays in outline (torso, two dark
lung fields, ribs, spine, heart, clavicles), never images of a person. PNEUMONIA
images add opacities inside the lungs: a dense, mottled lobar consolidation in
one lung (bacteria) or bilateral streaky haze (virus). Some NORMAL images carry
harmless artefacts and every film gets its own exposure, so brightness alone
cannot tell the classes apart (about 60% accuracy), while a small CNN learns
the task to over 90% validation accuracy in under a minute on two CPU cores.

File names follow the Kaggle set's patterns (IM-NNNN-0001, NORMAL2-IM-NNNN-0001,
personNNN_bacteria_MMM, personNNN_virus_MMM), with several images for some
pneumonia patients, so that patient-grouped splitting has something to do.

    python -c "from cxr_core.demo import write_demo_dataset; write_demo_dataset('/tmp/demo')"
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from cxr_core import config

SYNTHETIC_MARKER = "SYNTHETIC_DEMO.txt"
# What ensure_demo_dataset builds: about 300 images, a few seconds, small enough for a 2-core CPU.
_DEFAULTS = dict(n_normal=150, n_pneumonia=150, seed=0, image_size=192)
_CLASS_CODE = {"NORMAL": 0, "PNEUMONIA": 1}  # part of every seed, so classes never share a stream


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _ellipse(x, y, cx, cy, ax, ay, edge=0.15):
    """Soft-edged ellipse mask in [0, 1]; a soft edge reads as tissue, not a cut-out."""
    r = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return _smoothstep((1.0 - r) / edge)


def _segment(x, y, p, q, width):
    """Soft band around the segment p-q (clavicles, ECG wires)."""
    (px, py), (qx, qy) = (map(float, p), map(float, q))  # Python floats keep float32 arrays float32
    dx, dy = qx - px, qy - py
    t = np.clip(((x - px) * dx + (y - py) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    dist = np.hypot(x - px - t * dx, y - py - t * dy)
    return _smoothstep(1.0 - dist / width)


def _noise_field(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """Smooth noise in about [0, 1] with blobs size/cells pixels wide."""
    coarse = Image.fromarray(rng.normal(0.5, 0.25, (cells, cells)).astype(np.float32), "F")
    return np.clip(np.asarray(coarse.resize((size, size), Image.BICUBIC)), 0, 1)


def _anatomy(rng: np.random.Generator) -> dict:
    """One patient's body; drawn once per person so a person's images look alike."""
    s = rng.uniform(1.05, 1.17)  # child size and how much of the film the chest fills
    return dict(
        cx=0.5 + rng.normal(0, 0.02), cy=0.5 + rng.normal(0, 0.02), scale=s,
        lung_ax=0.135 * s * rng.uniform(0.94, 1.06), lung_ay=0.27 * s * rng.uniform(0.94, 1.06),
        heart_ax=0.15 * s * rng.uniform(0.85, 1.15), heart_ay=0.12 * s * rng.uniform(0.85, 1.15),
        rib_gap=0.068 * s * rng.uniform(0.9, 1.1), rib_bend=rng.uniform(1.5, 2.8),
        rib_phase=rng.uniform(0, 1), tissue=rng.uniform(0.5, 0.62), air=rng.uniform(0.28, 0.36),
        clavicles=rng.random() < 0.85,
    )


@dataclass
class _Chest:
    """One film's coordinate grids and where its chest lies on them (what each finding draws into)."""

    x: np.ndarray  # (1, size) column centres in 0..1
    y: np.ndarray  # (size, 1) row centres in 0..1
    cx: float
    s: float  # this visit's scale
    lx: np.ndarray  # distance from the midline: the chest is drawn mirror-symmetric
    lcy: float  # the lungs' centre row
    lungs: list  # left and right lung masks, heart and mediastinum cut out
    lung: np.ndarray  # both


def _draw(a: dict, finding: str, rng: np.random.Generator, size: int) -> Image.Image:
    """Render one grayscale film; `finding` is "normal", "bacteria" or "virus"."""
    img, chest = _normal_chest(a, finding, rng, size)
    if finding == "bacteria":
        _lobar_consolidation(img, chest, rng, size)
    elif finding == "virus":
        _interstitial_pattern(img, chest, rng, size)
    elif rng.random() < 0.5:
        _harmless_finding(img, chest, rng)
    img[: max(2, size // 24), size // 20 : size // 20 + max(2, size // 32)] += 0.5  # the "R" marker

    # Exposure differs per film, more than the opacities shift the mean brightness.
    img = (img - 0.4) * rng.uniform(0.85, 1.15) + 0.4 + rng.normal(0, 0.05)
    img = np.clip(img, 0, 1) ** rng.uniform(0.87, 1.15)
    img += rng.normal(0, rng.uniform(0.01, 0.03), img.shape)
    pil = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), "L")
    return pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.1) * size / 192))


def _normal_chest(a: dict, finding: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, _Chest]:
    """Torso, lungs, heart, ribs, spine and clavicles of person `a` on this visit."""
    # The same person is positioned a little differently on each visit.
    cx, cy = a["cx"] + rng.normal(0, 0.01), a["cy"] + rng.normal(0, 0.01)
    s = a["scale"] * rng.uniform(0.97, 1.03)
    g = ((np.arange(size) + 0.5) / size).astype(np.float32)  # float32 halves the drawing time
    x, y = g[None, :], g[:, None]
    lx = np.abs(x - cx)

    torso = _smoothstep((1 - ((lx / (0.46 * s)) ** 4 + ((y - cy - 0.1) / (0.62 * s)) ** 4) ** 0.25) / 0.08)
    img = 0.05 + a["tissue"] * np.maximum(torso, _ellipse(x, y, cx, 0.0, 0.09 * s, 0.2))
    img += 0.2 * _smoothstep((y - cy - 0.22 * s) / 0.2) * torso  # abdomen below the diaphragm

    low_volume = finding == "normal" and rng.random() < 0.15  # a shallow breath looks denser
    lcy, lay = cy - 0.03 * s, a["lung_ay"] * (0.85 if low_volume else 1.0)
    apex = np.clip(0.55 + 0.7 * (y - lcy + lay) / (2 * lay), 0.55, 1.05)  # narrow apices, wide bases
    lungs = [_ellipse(x, y, cx + side * 0.17 * s, lcy, a["lung_ax"] * apex, lay)
             for side in (-1, 1)]
    # Heart on the viewer's right (the patient's left, as on a PA film).
    heart = _ellipse(x, y, cx + 0.06 * s, cy + 0.11 * s, a["heart_ax"], a["heart_ay"], 0.3)
    mediastinum = _smoothstep(1 - lx / (0.06 * s))
    lungs = [m * (1 - heart) * (1 - mediastinum) for m in lungs]
    lung = np.maximum(*lungs)
    img -= a["air"] * lung
    img += 0.12 * heart + 0.12 * mediastinum * torso

    # Posterior ribs: a cosine along a parabola bent down laterally gives the arcs.
    phase = (y - a["rib_bend"] * (lx - 0.05 * s) ** 2) / a["rib_gap"] + a["rib_phase"]
    ribs = np.maximum(0, np.cos(2 * np.pi * phase)) ** 6
    img += 0.13 * ribs * _ellipse(x, y, cx, lcy, 0.36 * s, lay * 1.1) * (1 - mediastinum)
    spine = _smoothstep(1 - lx / (0.03 * s)) * (0.8 + 0.2 * np.cos(2 * np.pi * y / a["rib_gap"]))
    img += 0.15 * spine * torso
    if a["clavicles"]:
        img += 0.16 * _segment(lx, y, (0.04 * s, cy - 0.29 * s), (0.3 * s, cy - 0.36 * s), 0.02 * s)
    return img, _Chest(x, y, cx, s, lx, lcy, lungs, lung)


def _lobar_consolidation(img: np.ndarray, c: _Chest, rng: np.random.Generator, size: int) -> None:
    """Bacterial pneumonia: one lobe of one lung turns patchy white up to a fissure. The fissure is
    placed by visible lung share, so a lobe behind the heart is never a sliver."""
    x, y, s = c.x, c.y, c.s
    side, upper = rng.choice(2), rng.random() < 0.35
    sign = 2 * side - 1
    share = np.cumsum(c.lungs[side].sum(axis=1)) / c.lungs[side].sum()  # lung share above each row
    part = rng.uniform(0.5, 0.8)
    fissure = (int(np.searchsorted(share, part if upper else 1 - part)) + 0.5) / size
    fissure = fissure + rng.uniform(-0.3, 0.3) * (x - c.cx - sign * 0.17 * s)
    lobe = _smoothstep((fissure - y if upper else y - fissure) / (0.06 * s))
    patches = np.clip(0.5 + _noise_field(rng, 8, size), 0, 1)
    # Mottled, not flat: a small receptive field can tell it from the flat heart or soft tissue.
    mottle = 0.3 + 1.4 * _noise_field(rng, 20, size)
    # Air bronchograms: dark airways inside the white lobe, the reverse of a rib's bright-on-dark.
    hilum = (c.cx + sign * 0.08 * s, c.lcy + 0.02 * s)
    bronchi = np.zeros_like(lobe)
    angles = rng.uniform(-0.2, 1.2, 4) * (-1 if upper else 1)  # fanning out into the lobe
    for theta, length in zip(angles, rng.uniform(0.12, 0.25, 4) * s):
        end = (hilum[0] + sign * length * np.cos(theta), hilum[1] + length * np.sin(theta))
        bronchi = np.maximum(bronchi, _segment(x, y, hilum, end, 0.009 * s))
    img += rng.uniform(0.45, 0.6) * lobe * patches * mottle * (1 - 0.5 * bronchi) * c.lungs[side]
    img += rng.uniform(0.06, 0.12) * c.lungs[side]  # the rest of that lung is hazy too


def _interstitial_pattern(img: np.ndarray, c: _Chest, rng: np.random.Generator, size: int) -> None:
    """Viral pneumonia: bilateral streaks radiating from both hila, patchy haze."""
    haze = _noise_field(rng, 6, size) * (0.5 + _noise_field(rng, 48, size))
    angle = np.arctan2(c.y - c.lcy, c.lx - 0.05 * c.s)
    streaks = (0.5 + 0.5 * np.cos(angle * rng.uniform(14, 22) + rng.uniform(0, 6.3))) ** 3
    hilar = np.exp(-np.hypot(c.lx - 0.08 * c.s, c.y - c.lcy) / (0.2 * c.s))
    img += rng.uniform(0.3, 0.4) * (0.35 * haze + 0.35 * streaks + 0.5 * hilar) * c.lung


def _harmless_finding(img: np.ndarray, c: _Chest, rng: np.random.Generator) -> None:
    """On a normal film, so that "anything bright in a lung" is not the rule."""
    x, y, s = c.x, c.y, c.s
    kind = rng.choice(["granuloma", "soft_tissue", "wire"])
    if kind == "granuloma":
        side, sig = rng.choice(2), rng.uniform(0.008, 0.016)
        gx = c.cx + (2 * side - 1) * rng.uniform(0.1, 0.22) * s
        gy = c.lcy + rng.uniform(-0.15, 0.15) * s
        img += 0.35 * np.exp(-((x - gx) ** 2 + (y - gy) ** 2) / (2 * sig**2))
    elif kind == "soft_tissue":  # breast / pectoral shadows over both lung bases
        img += rng.uniform(0.04, 0.09) * _smoothstep((y - c.lcy) / (0.25 * s)) * c.lung
    else:
        p = (rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.4))
        img += 0.3 * _segment(x, y, p, (rng.uniform(0.1, 0.9), rng.uniform(0.6, 0.95)), 0.006)


def _patients(n_normal: int, n_pneumonia: int, rng: np.random.Generator) -> list[tuple]:
    """(class, patient_key, finding, file stems) per patient, named like the Kaggle set."""
    ids = rng.choice(np.arange(100, 10000), n_normal, replace=False)  # distinct across both prefixes
    normal2 = rng.random(n_normal) < 0.2
    patients = [("NORMAL", int(i), "normal", [f"{'NORMAL2-' if n2 else ''}IM-{i:04d}-0001"])
                for i, n2 in zip(ids, normal2)]
    person, image_no, left = 0, 0, n_pneumonia
    while left > 0:
        person += int(rng.integers(1, 4))
        kind = "bacteria" if rng.random() < 2 / 3 else "virus"
        count = min(left, int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15])))
        stems = []
        for _ in range(count):
            image_no += int(rng.integers(1, 4))
            stems.append(f"person{person}_{kind}_{image_no}")
        patients.append(("PNEUMONIA", person, kind, stems))
        left -= count
    return patients


def _write_tree(root: Path, n_normal: int, n_pneumonia: int, seed: int, image_size: int) -> None:
    rng = np.random.default_rng([seed, 7])
    patients = _patients(n_normal, n_pneumonia, rng)
    for cls in config.CLASSES:
        group = [p for p in patients if p[0] == cls]
        # About 20% of each class's images go to test, whole patients at a time; train keeps one at least.
        target, test = round(0.2 * sum(len(p[3]) for p in group)), set()
        for i in rng.permutation(len(group))[:-1]:
            if sum(len(group[j][3]) for j in test) >= target:
                break
            test.add(i)
        for split in ("train", "test"):
            (root / split / cls).mkdir(parents=True)
        for i, (_, key, finding, stems) in enumerate(group):
            anatomy = _anatomy(np.random.default_rng([seed, _CLASS_CODE[cls], key]))
            for k, stem in enumerate(stems, start=1):
                film_rng = np.random.default_rng([seed, _CLASS_CODE[cls], key, k])
                film = _draw(anatomy, finding, film_rng, image_size)
                film.save(root / ("test" if i in test else "train") / cls / f"{stem}.jpeg", quality=90)
    (root / SYNTHETIC_MARKER).write_text(
        "SYNTHETIC DEMO DATA. These images are synthetic: drawn shapes generated by cxr_core.demo\n"
        f"(seed={seed}, n_normal={n_normal}, n_pneumonia={n_pneumonia}, image_size={image_size}).\n"
        "They are not X-rays of any person and are not for any medical use.\n")


def _build_beside(out_dir: Path, **params) -> Path:
    """Write a complete tree into a fresh temp dir beside out_dir (same file system: rename is atomic)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of a process killed mid-write an hour or more ago; younger ones may still be in use.
    for stale in out_dir.parent.glob(f".{out_dir.name}.*-*"):
        if stale.is_dir() and time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the published folder should read like any other
    try:
        _write_tree(tmp, **params)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _check_replaceable(out_dir: Path) -> None:
    # Only an empty folder or an earlier demo is ever replaced: never a person's real data.
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / SYNTHETIC_MARKER).is_file():
        raise config.UserError(
            f"{out_dir} exists and is not a demo data set (it has no {SYNTHETIC_MARKER}); "
            "choose another folder or remove this one"
        )


def write_demo_dataset(out_dir, *, n_normal: int = 150, n_pneumonia: int = 150, seed: int = 0,
                       image_size: int = 192) -> Path:
    """Write out_dir/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg and the marker, atomically; return out_dir.

    Same arguments, same bytes. An existing demo folder at out_dir is replaced.
    """
    out_dir = Path(out_dir)
    if n_normal < 1 or n_pneumonia < 1 or image_size < 32:
        raise ValueError("need n_normal >= 1, n_pneumonia >= 1 and image_size >= 32")
    _check_replaceable(out_dir)
    tmp = _build_beside(out_dir, n_normal=n_normal, n_pneumonia=n_pneumonia, seed=seed, image_size=image_size)
    old = out_dir.with_name(f".{out_dir.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
    try:
        # A directory cannot be renamed over a non-empty one: move the old demo aside first.
        # Should the second rename fail, the old demo is lost, which costs only a regeneration.
        if out_dir.exists():
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def ensure_demo_dataset(out_dir=None) -> Path:
    """Return the demo folder (default config.demo_data_dir()), generating it once if missing.

    Concurrent callers each build in their own temp dir; the first rename wins
    and the others discard their copy and use the winner's. A non-empty folder
    without the marker is refused (UserError), never overwritten.
    """
    out_dir = Path(out_dir) if out_dir is not None else config.demo_data_dir()
    if (out_dir / SYNTHETIC_MARKER).is_file():
        return out_dir
    _check_replaceable(out_dir)
    tmp = _build_beside(out_dir, **_DEFAULTS)
    try:
        os.rename(tmp, out_dir)  # succeeds onto a missing or empty folder only
    except OSError:
        if not (out_dir / SYNTHETIC_MARKER).is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def is_synthetic(data_dir) -> bool:
    """True if the marker sits at data_dir or up to two levels above (a split or class folder)."""
    path = Path(data_dir).resolve()
    return any((p / SYNTHETIC_MARKER).is_file() for p in [path, *path.parents[:2]])

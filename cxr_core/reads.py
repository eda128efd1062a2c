"""Reading sets: every student reads the same X-rays, and sits as a point beside the model's ROC curve.

The studies this project teaches compare a model with human readers on the same images (CheXNeXt,
Rajpurkar et al. 2018). A reading set is such a comparison for a class, stored beside the run store:

    RUNS/.reads/<set_id>/set.json                   the images (relative to the data folder), their truth,
                                                    the seed and mix they were drawn with, open or closed
    RUNS/.reads/<set_id>/readers/<reader_id>.json   one submission: nickname, answers, confidences

Every file is written atomically (store.atomic_write_json); a malformed one is skipped with a warning.

    create_set(data_dir, store, images=20, seed=7)       draw a set from the official test split
    list_sets(store)  get_set(set_id, store)  close_set(...)  delete_set(...)
    submit(set_id, store, session, name, answers)        one submission per session, at most MAX_READERS
    readers(reading_set, store)                          the stored submissions, with each reader's metrics

The numbers (a reader's confusion matrix, ROC point and curve, the majority vote, the model on the
same images, the findings) are in cxr_core.reader_metrics; `report` there is what the Read page and
`python -m cxr_core reads SET --json` show.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .config import CLASSES, UserError
from .store import RunStore, atomic_write_json, read_json

READS = ".reads"
SET_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{4}$")
OPEN, CLOSED = "open", "closed"
MAX_READERS = 300  # a lecture hall; beyond it the class view would be a cloud, and the disk a target
MAX_NAME = 40
CONFIDENCES = (1, 2, 3, 4, 5)
DEFAULT_IMAGES, DEFAULT_SEED = 20, 7
# Half of each class by default: sensitivity and specificity then rest on as many images each.
DEFAULT_PNEUMONIA_SHARE = 0.5


def sets_dir(store: RunStore) -> Path:
    return Path(store.root) / READS


def set_path(set_id: str, store: RunStore) -> Path:
    if not isinstance(set_id, str) or not SET_ID.fullmatch(set_id):
        raise UserError(f"invalid reading set id {set_id!r}: use an id shown by `python -m cxr_core reads`")
    return sets_dir(store) / set_id


def _draw_pool(data_dir, store: RunStore, run_id: str | None):
    """(data root, pool of candidate images, where they come from): the official test split, else the
    run's own test split (carved from train, named in the set so the class knows)."""
    from . import data

    scan = data.scan_folder(data_dir, require_train=False)
    pool = scan.manifest[scan.manifest["source_split"] == "test"]
    if not pool.empty and run_id is None:
        return scan, pool[["path", "label", "patient_id"]], "official test split"
    if run_id is None:
        raise UserError(f"{scan.root} has no test/ folder to draw from; pass --run RUN to draw from that run's "
                        "own test split (`python -m cxr_core runs` lists them)")
    split = store.split(run_id)
    test = split[split["split"] == "test"]
    pool = test.assign(path=[str(scan.root / p) for p in test["path"]])[["path", "label", "patient_id"]]
    return scan, pool, f"run {run_id}'s own test split"


def create_set(data_dir, store: RunStore, *, images: int = DEFAULT_IMAGES, seed: int = DEFAULT_SEED,
               pneumonia_share: float = DEFAULT_PNEUMONIA_SHARE, run_id: str | None = None) -> dict:
    """Draw `images` X-rays (a `pneumonia_share` of them PNEUMONIA) with `seed`, in one shuffled order
    that every reader sees; store the set and return it."""
    if not 2 <= images <= 200:
        raise UserError(f"--images {images}: a reading set holds 2 to 200 images")
    if not 0 < pneumonia_share < 1:
        raise UserError(f"--pneumonia-share {pneumonia_share}: give a share between 0 and 1, e.g. 0.5")
    scan, pool, drawn_from = _draw_pool(data_dir, store, run_id)
    rng = np.random.default_rng(seed)
    wanted = {1: int(round(images * pneumonia_share))}
    wanted[0] = images - wanted[1]
    picked = []
    for label, count in wanted.items():
        candidates = pool[pool["label"] == label].sort_values("path")
        if len(candidates) < max(count, 1):
            raise UserError(f"the {drawn_from} of {scan.root} holds {len(candidates)} {CLASSES[label]} images, "
                            f"fewer than the {count} asked for; ask for fewer --images")
        picked += candidates.iloc[rng.choice(len(candidates), size=count, replace=False)].to_dict("records")
    order = rng.permutation(len(picked))
    created = time.time()
    set_id = f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(created))}-{os.urandom(2).hex()}"
    record = {"id": set_id, "created": created, "state": OPEN, "data_dir": str(scan.root), "drawn_from": drawn_from,
              "seed": seed, "pneumonia_share": pneumonia_share, "run": run_id, "synthetic": bool(scan.synthetic),
              "max_readers": MAX_READERS,
              "images": [{"path": os.path.relpath(picked[i]["path"], scan.root), "truth": int(picked[i]["label"])}
                         for i in order]}
    folder = set_path(set_id, store)
    (folder / "readers").mkdir(parents=True)
    atomic_write_json(folder / "set.json", record)
    return record


def _valid_set(record) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("images"), list) and record.get("state") in (OPEN, CLOSED)
            and all(isinstance(i, dict) and isinstance(i.get("path"), str) and i.get("truth") in (0, 1)
                    for i in record["images"]))


def get_set(set_id: str, store: RunStore) -> dict:
    path = set_path(set_id, store) / "set.json"
    if not path.parent.is_dir():
        raise UserError(f"no reading set {set_id!r}; list them with `python -m cxr_core reads`")
    try:
        record = read_json(path)
    except (OSError, ValueError) as error:
        raise UserError(f"reading set {set_id}: set.json is unreadable ({type(error).__name__}); delete the set") from None
    if not _valid_set(record):
        raise UserError(f"reading set {set_id}: set.json is not a reading set's; delete the set")
    return record


def list_sets(store: RunStore, warn=None) -> list[dict]:
    """Every readable set, newest first; `warn(message)` hears about each one skipped."""
    folder = sets_dir(store)
    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith(".") or not path.is_dir():
            continue
        try:
            found.append(get_set(path.name, store))
        except UserError as error:
            if warn:
                warn(f"skipped: {error}")
    return sorted(found, key=lambda s: s.get("created") or 0, reverse=True)


def close_set(set_id: str, store: RunStore) -> dict:
    """No more answers; what was submitted stays."""
    with _set_lock(set_id, store):
        record = dict(get_set(set_id, store), state=CLOSED, closed=time.time())
        atomic_write_json(set_path(set_id, store) / "set.json", record)
    return record


def delete_set(set_id: str, store: RunStore) -> None:
    folder = set_path(set_id, store)
    if not folder.is_dir():
        raise UserError(f"no reading set {set_id!r}; list them with `python -m cxr_core reads`")
    trash = sets_dir(store) / f".deleted-{set_id}-{os.getpid()}"  # renamed first: no listing sees half a set
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _set_lock(set_id: str, store: RunStore):
    """One submission at a time per set, across sessions and processes: the count and the one-per-session
    rule are checked and the answers written under it."""
    with open(set_path(set_id, store) / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def reader_id(set_id: str, session: str) -> str:
    """A session's file name in a set: a hash, so the file never holds the session's token itself."""
    return hashlib.sha256(f"{set_id}:{session}".encode()).hexdigest()[:20]


def clean_name(name) -> str:
    """A nickname as stored: one line, trimmed, at most MAX_NAME characters (escaped wherever shown)."""
    return " ".join(str(name or "").split())[:MAX_NAME]


def _check_answers(reading_set: dict, answers) -> list[dict]:
    n = len(reading_set["images"])
    if not isinstance(answers, list) or len(answers) != n:
        raise UserError(f"a submission answers all {n} images of the set, in order")
    checked = []
    for i, answer in enumerate(answers):
        call, confidence = (answer.get("answer"), answer.get("confidence")) if isinstance(answer, dict) else (None, None)
        if call not in CLASSES or confidence not in CONFIDENCES:
            raise UserError(f"answer {i + 1}: give NORMAL or PNEUMONIA and a confidence from 1 to 5")
        checked.append({"answer": call, "confidence": int(confidence)})
    return checked


def submit(set_id: str, store: RunStore, session: str, name: str, answers: list[dict]) -> dict:
    """Store one reader's answers ([{answer, confidence}] in the set's order); returns the stored record.

    Refused (UserError, one line) when the set is closed, this session already submitted, or the set
    holds MAX_READERS readers."""
    if not session:
        raise UserError("a submission needs its browser session; reload the page and read again")
    with _set_lock(set_id, store):
        reading_set = get_set(set_id, store)
        if reading_set["state"] != OPEN:
            raise UserError(f"reading set {set_id} is closed: it takes no more answers")
        path = set_path(set_id, store) / "readers" / f"{reader_id(set_id, session)}.json"
        if path.exists():
            raise UserError("this browser session has already submitted its answers to this set; only the first counts")
        if len(list(path.parent.glob("*.json"))) >= MAX_READERS:
            raise UserError(f"reading set {set_id} already holds {MAX_READERS} readers, its limit; no more are taken")
        record = {"id": path.stem, "name": clean_name(name), "submitted": time.time(),
                  "answers": _check_answers(reading_set, answers)}
        atomic_write_json(path, record)
    return record


def readers(reading_set: dict, store: RunStore, warn=None) -> list[dict]:
    """The set's submissions, oldest first; a file that is not one (or answers another set) is skipped,
    and `warn(message)` hears of it."""
    folder = set_path(reading_set["id"], store) / "readers"
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = read_json(path)
            record["answers"] = _check_answers(reading_set, record.get("answers"))
            record["submitted"] = float(record.get("submitted") or 0)
            record["name"] = clean_name(record.get("name"))
        except (OSError, ValueError, TypeError, AttributeError, UserError) as error:
            if warn:
                warn(f"skipped {path.name} in reading set {reading_set['id']}: not a reader's answers ({str(error)[:120]})")
            continue
        found.append(record)
    return sorted(found, key=lambda r: (r["submitted"], r["id"]))


def version(set_id: str, store: RunStore) -> tuple:
    """Changes whenever the set or its answers change (a cache key): the modification times of set.json
    and of the readers folder, which every new answer file touches."""
    folder = set_path(set_id, store)
    stamps = []
    for path in (folder / "set.json", folder / "readers"):
        try:
            stamps.append(path.stat().st_mtime_ns)
        except OSError:
            stamps.append(0)
    return tuple(stamps)

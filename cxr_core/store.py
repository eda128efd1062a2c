"""The run store: one folder per training run, written atomically.

    RUNS/<run_id>/
        settings.json       the TrainSettings and the data folder
        status.json         queued | running | done | failed | cancelled (+ pid and its start time, epoch, error)
        split.csv           every image's split, label and patient (the split this run used)
        history.json        per-epoch metrics, rewritten after each epoch
        model.keras         appears only once complete (written to a temp name, then renamed); an imported
                            SavedModel run keeps model.savedmodel/ instead (cxr_core.imported)
        threshold.json      the decision threshold chosen on validation, and its rule
        ood.npz, ood.json   the out-of-distribution check (cxr_core.ood); absent in older runs
        evaluation_<split>.json, predictions_<split>.csv
                            scored on the run's own split
        evaluation_<split>@<folder>.json, predictions_<split>@<folder>.csv
                            scored on another labelled folder (`evaluate --data DIR`), one
                            pair per folder, beside the run's own evaluation
        evaluation_<split>@<own or folder>+occlude-<lungs|outside>.json, predictions_...
                            scored with the lung box blacked out, or all but it (`evaluate --occlude`)
        tensorboard/        TensorBoard event files (train/, validation/) from keras.callbacks.TensorBoard:
                            `tensorboard --logdir RUNS`; absent when the tensorboard package is not installed

Readers never see a half-written file: every write goes to a temp file in the
same folder and is moved into place with os.replace. A folder that cannot be
read shows as a broken run; it never breaks a listing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pandas as pd

from .config import UserError, runs_dir
from .processes import pid_alive, process_record

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# The run's own split; any other source is a folder key (see folder_key).
OWN = "own"
# A source scored with occluded images: "<own or folder key>+occlude-<lungs|outside>".
OCCLUDED = "+occlude-"
# A source scored at a threshold from another labelled folder: "<own or folder key>+threshold-from-<key>".
CALIBRATED = "+threshold-from-"
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")  # folder keys never hold "+", so OCCLUDED cannot be faked
_SOURCE_CHARS = re.compile(r"[^A-Za-z0-9_.+-]+")


class RunState(StrEnum):
    """A run's state (and an evaluation request's). Members are strings: they compare equal to, and
    serialise as, the words status.json holds."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # read as running, but its process is gone
    BROKEN = "broken"  # files missing or unreadable
    STOPPING = "stopping"  # only cancel()'s answer: the run was sent SIGTERM and stops at its next batch


FINISHED = RunState.DONE
ACTIVE_STATES = (RunState.QUEUED, RunState.RUNNING)
# What status.json may hold; INTERRUPTED and BROKEN are only ever read, never written.
STATES = (RunState.QUEUED, RunState.RUNNING, RunState.DONE, RunState.FAILED, RunState.CANCELLED)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, allow_nan=False, default=str).encode())


def atomic_save_model(model, path: Path) -> None:
    """`model.save` to a temp name beside `path`, then renamed: a visible model file is always whole
    (a run's model.keras appearing means the run is complete)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}-{os.getpid()}{path.suffix}")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_bytes(path, frame.to_csv(index=False).encode())


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


@dataclass
class Run:
    """What a listing knows of one run folder, without loading its model."""

    run_id: str
    path: Path
    state: str  # queued, running, done, failed, cancelled, interrupted, broken
    settings: dict
    status: dict
    error: str | None = None

    @property
    def model(self) -> str:
        return self.settings.get("model", "?")

    @property
    def recipe(self) -> str:
        """The preset the run started from (registry.Recipe); runs from before recipes are "improved"."""
        return self.settings.get("recipe", "improved")

    @property
    def has_model(self) -> bool:
        return model_file(self.path) is not None

    @property
    def kind(self) -> str:
        """"trained", "imported" (cxr_core.imported) or "ensemble" (cxr_core.ensemble)."""
        return self.recipe if self.recipe in ("imported", "ensemble") else "trained"

    @property
    def created(self) -> float:
        """When the run was queued (0 if its status does not say): the listing's sort key."""
        try:
            return float(self.status.get("created") or 0)
        except (TypeError, ValueError):
            return 0.0

    def evaluation(self, split: str, source: str = OWN) -> dict | None:
        """The stored evaluation on the run's own split, or on the folder `source` (a folder key)."""
        try:
            result = read_json(self.path / f"evaluation_{split}{_suffix(source)}.json")
        except (OSError, ValueError):
            return None
        return result if isinstance(result, dict) else None

    def evaluation_sources(self, split: str) -> list[str]:
        """OWN (when stored) and every folder key this run was scored on for `split`, sorted."""
        sources = [OWN] if (self.path / f"evaluation_{split}.json").is_file() else []
        prefix = f"evaluation_{split}@"
        try:
            names = sorted(p.name for p in self.path.iterdir())
        except OSError:
            return sources
        return sources + [n[len(prefix):-5] for n in names if n.startswith(prefix) and n.endswith(".json")]

    def history(self) -> list[dict]:
        try:
            rows = read_json(self.path / "history.json", [])
        except (OSError, ValueError):
            return []
        return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []


def model_file(run_path: Path) -> Path | None:
    """The run's model: model.keras, or the SavedModel folder an imported run keeps (imported.SAVEDMODEL_DIR)."""
    for name, check in (("model.keras", Path.is_file), ("model.savedmodel", Path.is_dir)):
        if check(Path(run_path) / name):
            return Path(run_path) / name
    return None


def occluded_source(source: str, occlusion: str | None) -> str:
    """The source key of `source` scored with `occlusion` (images.OCCLUSIONS); `source` when None."""
    return f"{source or OWN}{OCCLUDED}{occlusion}" if occlusion else (source or OWN)


def split_source(source: str) -> tuple[str, str | None]:
    """(own or folder key, occlusion or None) of a source key."""
    base, _, occlusion = (source or OWN).partition(OCCLUDED)
    return base.partition(CALIBRATED)[0], occlusion or None


def calibrated_source(source: str, calibration_key: str | None) -> str:
    """The source key of `source` scored at the threshold taken from the labelled folder `calibration_key`."""
    return f"{source or OWN}{CALIBRATED}{calibration_key}" if calibration_key else (source or OWN)


def calibration_of(source: str) -> str | None:
    """The folder key a source's threshold came from (calibrated_source), or None: the run's own threshold."""
    return (source or OWN).partition(OCCLUDED)[0].partition(CALIBRATED)[2] or None


def _suffix(source: str) -> str:
    if source in (None, "", OWN):
        return ""
    if _SOURCE_CHARS.search(source) or source.startswith("."):
        raise UserError(f"invalid evaluation source {source!r}: use a folder key shown by `python -m cxr_core runs`")
    return f"@{source}"


def evaluation_files(run_path: Path, split: str, source: str = OWN) -> tuple[Path, Path]:
    """(evaluation json, predictions csv) of one split scored on one source."""
    suffix = _suffix(source)
    return run_path / f"evaluation_{split}{suffix}.json", run_path / f"predictions_{split}{suffix}.csv"


def folder_key(run_path: Path, split: str, folder: Path) -> str:
    """The key a folder's evaluation is stored under: the folder's name, made safe.

    Two different folders with the same name (two copies called chest_xray) get
    the name plus a short hash of the path, so neither overwrites the other.
    """
    folder = Path(folder)
    key = _KEY_CHARS.sub("_", folder.name).strip("._") or "folder"
    try:
        stored = read_json(evaluation_files(run_path, split, key)[0])
    except (OSError, ValueError):
        stored = None
    if isinstance(stored, dict) and stored.get("data_dir") not in (None, str(folder)):
        key = f"{key}-{hashlib.sha256(str(folder).encode()).hexdigest()[:6]}"
    return key


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else runs_dir()

    def run_path(self, run_id: str) -> Path:
        """The folder of a run id; ids from users are checked so no path leaves the store."""
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id) or ".." in run_id:
            raise UserError(f"invalid run id {run_id!r}: use the id shown by `python -m cxr_core runs`")
        path = (self.root / run_id).resolve()
        if path.parent != self.root.resolve():
            raise UserError(f"invalid run id {run_id!r}")
        return path

    def new_run(self, settings: dict, data_dir: str, state: str = RunState.QUEUED) -> Run:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for _ in range(100):
            run_id = f"{stamp}-{settings['model']}-{os.urandom(2).hex()}"
            path = self.root / run_id
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        record = dict(settings, data_dir=str(data_dir))
        atomic_write_json(path / "settings.json", record)
        status = {"state": state, "created": time.time()}
        atomic_write_json(path / "status.json", status)
        return Run(run_id, path, state, record, status)

    def set_status(self, run_id: str, **fields) -> dict:
        """Update status.json with `fields`; a `pid` is stored with its process's start time (pid_alive)."""
        path = self.run_path(run_id)
        status = read_json(path / "status.json", {}) or {}
        if "pid" in fields and "pid_start" not in fields:
            fields = {**fields, **process_record(fields["pid"])}
        status.update(fields, updated=time.time())
        atomic_write_json(path / "status.json", status)
        return status

    def get(self, run_id: str) -> Run:
        path = self.run_path(run_id)
        if not path.is_dir():
            raise UserError(f"no run {run_id!r} in {self.root}; list runs with `python -m cxr_core runs`")
        return self._read(path)

    def _read(self, path: Path) -> Run:
        try:
            settings = read_json(path / "settings.json")
            status = read_json(path / "status.json")
            if not isinstance(settings, dict) or not isinstance(status, dict) or "model" not in settings:
                raise ValueError("settings.json or status.json is missing or not a run's")
        except (OSError, ValueError) as error:
            return Run(path.name, path, RunState.BROKEN, {}, {}, error=f"unreadable run folder: {error}")
        state = status.get("state")
        error = status.get("error")
        if state not in STATES:
            state, error = RunState.BROKEN, f"status.json has no known state ({str(state)[:40]!r})"
        elif state == RunState.RUNNING and not pid_alive(status.get("pid"), status.get("pid_start")):
            state, error = RunState.INTERRUPTED, "the training process died (killed or crashed) before finishing"
        elif state == FINISHED and model_file(path) is None:
            state, error = RunState.BROKEN, "model.keras is missing"
        return Run(path.name, path, state, settings, status, error=error)

    def list(self) -> list[Run]:
        """Every run folder, newest first; foreign files and hidden folders are skipped."""
        if not self.root.is_dir():
            return []
        runs = [self._read(p) for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(runs, key=lambda r: r.created, reverse=True)

    def finished(self) -> list[Run]:
        return [r for r in self.list() if r.state == FINISHED]

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        if run.state in ACTIVE_STATES:
            raise UserError(f"run {run_id} is {run.state}; stop it before deleting it")
        # Rename first so a listing never sees a half-deleted run.
        trash = self.root / f".deleted-{run_id}-{os.getpid()}"
        os.replace(run.path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def load_model(self, run_id: str):
        """The run's Keras model, loaded with safe_mode=True (no arbitrary code)."""
        import keras

        run = self.get(run_id)
        model_path = model_file(run.path)
        if model_path is None:
            raise UserError(f"run {run_id} has no model ({run.state}); train it to the end first")
        try:
            if model_path.is_dir():  # an imported SavedModel: callable only, wrapped as it was on import
                from .imported import callable_model

                return callable_model(model_path, run.settings)
            return keras.saving.load_model(model_path, safe_mode=True, compile=False)
        except UserError:
            raise
        except Exception as error:  # Keras raises many types for bad files
            raise UserError(f"run {run_id}: model.keras cannot be loaded safely "
                            f"({type(error).__name__}: {str(error)[:200]})") from None

    def threshold(self, run_id: str) -> float:
        try:
            data = read_json(self.run_path(run_id) / "threshold.json", {}) or {}
            return float(data.get("threshold", 0.5))
        except (OSError, ValueError, TypeError, AttributeError) as error:
            raise UserError(f"run {run_id}: threshold.json is unreadable ({type(error).__name__}); retrain the run") from None

    def split(self, run_id: str) -> pd.DataFrame:
        path = self.run_path(run_id) / "split.csv"
        if not path.is_file():
            raise UserError(f"run {run_id} has no split.csv; it did not get as far as splitting the data")
        try:
            return pd.read_csv(path)
        except (OSError, ValueError) as error:  # pandas' parser errors are ValueErrors
            raise UserError(f"run {run_id}: split.csv is unreadable ({type(error).__name__})") from None

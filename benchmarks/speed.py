"""Speed benchmark: ours against the seed's way, measured in the same run, reported as ratios.

    python benchmarks/speed.py                                    # every section on ../shared/data/chest_xray
    python benchmarks/speed.py --only pipeline,predict,pages      # a few sections (others keep earlier results)
    python benchmarks/speed.py --only training --limit 800 --epochs 3     # a shortened training comparison
    python benchmarks/speed.py --update-readme                    # also rewrite the README's speed section

Sections (`--only` takes a comma-separated subset):
  pipeline  images/s over one epoch of the train split: cxr_core's pipeline (cold: decoding into the
            cache included; warm: cache reused) vs keras.utils.image_dataset_from_directory at 180 px RGB
  training  regularized_cnn with the project's defaults (`python -m cxr_core train`) vs the seed recipe
            (the seed's CNN at 180x180 RGB from image_dataset_from_directory, Adam 1e-3, 10 epochs), both
            on cxr_core's patient split; per-epoch val AUC and wall time, time-to-seed-quality ratio
  predict   one 2000x2000 JPEG upload through inference.predict_image (model loaded), and Grad-CAM
  pages     each page's render time under streamlit AppTest with 10 finished runs in the store
  memory    peak resident memory of a training run and of the dashboard (`streamlit run` driven by
            Playwright on Debian's Chromium) after visiting every page
  scale     a synthetic folder of 20,000 images: cxr_core pipeline images/s and peak memory

Each child process's peak memory is the kernel's high-water mark (wait4 ru_maxrss or /proc VmHWM).
Results go to benchmarks/results/speed.json and speed.md; sections not run keep their earlier results.
Timings on a shared machine drift: compare ours and the seed's within one run, as the ratios do.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

import common
from cxr_core import data as data_mod
from cxr_core.config import CLASSES, MODEL_NAMES, UserError, default_settings

SECTIONS = ("pipeline", "training", "predict", "pages", "memory", "scale")
TARGETS = {"predict_p95_ms": 150, "gradcam_p95_ms": 500, "page_s": 1.5, "training_peak_gib": 3.0,
           "dashboard_peak_gib": 1.5, "time_to_quality_ratio": 0.5}
SEED_RECIPE = {"image_size": 180, "epochs": 10, "batch_size": 32, "learning_rate": 1e-3, "color": "rgb"}
BATCH = 32
HELPER_STEMS = {"common", "utils", "helpers", "shared", "components", "widgets", "state", "style", "ui"}
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# "epoch 3/12 ... val_auc 0.9512  41.2s", as `python -m cxr_core train` and the seed child print it.
EPOCH_LINE = re.compile(r"^(?:seed )?epoch (\d+)/(\d+)\b.*val_auc (\S+)\s+([\d.]+)s\s*$")


@contextlib.contextmanager
def env_vars(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------- data and split


def limited_copy(data: Path, limit: int, out: Path, seed: int) -> Path:
    """A Kaggle-layout folder of symlinks to `limit` train images, whole patients, both classes in proportion."""
    manifest = data_mod.scan_folder(data).manifest
    manifest = manifest[manifest.source_split == "train"]
    rng = np.random.default_rng(seed)
    chosen = []
    for label, group in manifest.groupby("label"):
        quota = round(limit * len(group) / len(manifest))
        patients = rng.permutation(group["patient_id"].unique())
        taken = 0
        for patient in patients:
            if taken >= quota:
                break
            rows = group[group.patient_id == patient]
            chosen.append(rows)
            taken += len(rows)
    root = fresh(out)
    for _, row in pd.concat(chosen).iterrows():
        folder = root / "train" / row.class_name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / Path(row.path).name).symlink_to(row.path)
    return root


def patient_split(data: Path):
    """cxr_core's split, exactly as `python -m cxr_core train` makes it for regularized_cnn."""
    s = default_settings("regularized_cnn")
    scan = data_mod.scan_folder(data)
    return data_mod.assign_splits(scan.manifest, val_fraction=s.val_fraction, test_fraction=s.test_fraction, seed=s.seed)


def split_link_folders(split, out: Path) -> dict[str, Path]:
    """out/{train,val}/{NORMAL,PNEUMONIA}/ of symlinks: the patient split, in the layout the seed's loader reads."""
    fresh(out)
    for name in ("train", "val"):
        for cls in CLASSES:
            (out / name / cls).mkdir(parents=True)
        for i, row in enumerate(split[split.split == name].itertuples()):
            target = out / name / row.class_name / Path(row.path).name
            if target.exists() or target.is_symlink():
                target = target.with_name(f"{i}_{target.name}")
            target.symlink_to(row.path)
    return {name: out / name for name in ("train", "val")}


def warm_page_cache(paths) -> None:
    """Read every file once, so neither loader pays the first disk read the other one paid."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass


def seed_dataset(folder: Path, shuffle: bool, seed: int = 42):
    import keras

    return keras.utils.image_dataset_from_directory(
        folder, labels="inferred", label_mode="binary", class_names=list(CLASSES), color_mode="rgb",
        image_size=(SEED_RECIPE["image_size"],) * 2, batch_size=SEED_RECIPE["batch_size"], shuffle=shuffle,
        seed=seed, verbose=False)


# ---------------------------------------------------------------- (1) input pipeline


def section_pipeline(ctx) -> dict:
    from cxr_core import pipeline

    train = ctx.split[ctx.split.split == "train"]
    paths, labels = train["path"].tolist(), train["label"].to_numpy()
    size = default_settings("regularized_cnn").image_size
    warm_page_cache(paths)

    def seed_epoch():
        started = time.perf_counter()
        n = sum(int(x.shape[0]) for x, _ in seed_dataset(ctx.links()["train"], shuffle=True))
        return n, time.perf_counter() - started

    # Its first epoch also pays TensorFlow's one-off start-up; the second is the loader's steady state.
    _, seed_first_s = seed_epoch()
    count, seed_s = seed_epoch()

    def ours_epoch():
        started = time.perf_counter()
        cache = pipeline.build_cache(paths, size)
        decoded = time.perf_counter() - started
        ds = pipeline.make_dataset(cache, np.arange(len(paths)), labels, batch_size=BATCH, shuffle=True, seed=42)
        n = sum(int(x.shape[0]) for x, _ in ds)
        return n, decoded, time.perf_counter() - started

    with env_vars(CXR_CACHE_DIR=fresh(ctx.work / "cache-pipeline")):
        n_cold, decode_s, cold_s = ours_epoch()
        n_warm, _, warm_s = ours_epoch()
    assert n_cold == n_warm == count == len(paths), (n_cold, n_warm, count, len(paths))
    result = {
        "images": len(paths),
        "seed_loader": {"what": "keras.utils.image_dataset_from_directory, 180x180 RGB, batch 32, shuffled",
                        "seconds": seed_s, "images_per_s": count / seed_s, "first_epoch_seconds": seed_first_s},
        "ours_cold": {"what": f"cxr_core pipeline, {size} px gray: decode into the cache + one epoch",
                      "seconds": cold_s, "decode_seconds": decode_s, "images_per_s": len(paths) / cold_s},
        "ours_warm": {"what": "cxr_core pipeline, cache reused: one epoch", "seconds": warm_s,
                      "images_per_s": len(paths) / warm_s},
    }
    result["warm_vs_seed"] = result["ours_warm"]["images_per_s"] / result["seed_loader"]["images_per_s"]
    result["cold_vs_seed"] = result["ours_cold"]["images_per_s"] / result["seed_loader"]["images_per_s"]
    print(f"  seed loader {result['seed_loader']['images_per_s']:.0f} img/s, ours cold "
          f"{result['ours_cold']['images_per_s']:.0f}, warm {result['ours_warm']['images_per_s']:.0f}", flush=True)
    return result


# ---------------------------------------------------------------- (2) training


def seed_train_child(spec: dict) -> None:
    """Child process: the seed recipe; prints one line per epoch for the parent to time."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(spec["seed"])
    train, val = seed_dataset(Path(spec["train"]), True, spec["seed"]), seed_dataset(Path(spec["val"]), False)
    size = SEED_RECIPE["image_size"]
    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Dense(128, activation="relu")(layers.Flatten()(x))
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer=keras.optimizers.Adam(SEED_RECIPE["learning_rate"]), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            print(f"seed epoch {epoch + 1}/{spec['epochs']}  val_auc {logs['val_auc']:.4f}  "
                  f"{time.perf_counter() - self.started:.1f}s", flush=True)

    model.fit(train, validation_data=val, epochs=spec["epochs"], callbacks=[Clock()], verbose=0)


def timed_epochs(child_lines: list[tuple[float, str]]) -> list[dict]:
    epochs = []
    for at, line in child_lines:
        match = EPOCH_LINE.match(line)
        if match:
            auc = match.group(3)
            epochs.append({"epoch": int(match.group(1)), "val_auc": None if auc == "nan" else float(auc),
                           "seconds": float(match.group(4)), "wall_s": round(at, 2)})
    return epochs


def train_ours(ctx, epochs: int | None, tag: str) -> dict:
    """`python -m cxr_core train` regularized_cnn with defaults, a cold private cache (decoding included)."""
    from cxr_core.store import RunStore

    store = ctx.work / f"runs-{tag}"
    command = [sys.executable, "-m", "cxr_core", "train", "--data", str(ctx.data), "--model", "regularized_cnn",
               "--runs", str(store)] + (["--epochs", str(epochs)] if epochs else [])
    lines: list[tuple[float, str]] = []
    child = common.run_child(command, env=common.cli_env(CXR_CACHE_DIR=fresh(ctx.work / f"cache-{tag}")),
                             on_line=lambda line, at: lines.append((at, line)), echo=not ctx.args.quiet)
    if child["rc"] != 0:
        raise RuntimeError(f"training failed: {' | '.join(child['lines'][-3:])}")
    run = RunStore(store).get(child["lines"][-1].strip())
    history = run.history()
    walls = {e["epoch"]: e["wall_s"] for e in timed_epochs(lines)}
    return {"run": run.run_id, "epochs_configured": run.settings["epochs"], "image_size": run.settings["image_size"],
            "per_epoch": [{"epoch": h["epoch"], "val_auc": h.get("val_auc"), "seconds": h.get("seconds"),
                        "wall_s": walls.get(h["epoch"])} for h in history],
            "total_wall_s": child["wall_s"], "peak_rss_mib": child["peak_rss_mib"]}


def section_training(ctx) -> dict:
    epochs = ctx.args.epochs
    seed_epochs = epochs or SEED_RECIPE["epochs"]
    links = ctx.links()
    spec = {"train": str(links["train"]), "val": str(links["val"]), "epochs": seed_epochs, "seed": 42}
    print(f"  seed recipe: {seed_epochs} epochs", flush=True)
    lines: list[tuple[float, str]] = []
    child = common.run_child([sys.executable, __file__, "--child", "seed-train", "--child-spec", json.dumps(spec)],
                             on_line=lambda line, at: lines.append((at, line)), echo=not ctx.args.quiet)
    if child["rc"] != 0:
        raise RuntimeError(f"seed recipe failed: {' | '.join(child['lines'][-3:])}")
    seed_epochs_run = timed_epochs(lines)
    if not seed_epochs_run:
        raise RuntimeError(f"the seed recipe reported no epochs: {' | '.join(child['lines'][-3:])}")
    seed = {"per_epoch": seed_epochs_run, "total_wall_s": seed_epochs_run[-1]["wall_s"],
            "peak_rss_mib": child["peak_rss_mib"],
            "seconds_per_epoch": [e["seconds"] for e in seed_epochs_run]}
    print(f"  ours: regularized_cnn defaults{f', --epochs {epochs}' if epochs else ''}", flush=True)
    ours = train_ours(ctx, epochs, "training")
    ctx.training_peak = {"peak_rss_mib": ours["peak_rss_mib"], "epochs": len(ours["per_epoch"]), "limit": ctx.args.limit}

    seed_final = seed_epochs_run[-1]["val_auc"]
    reached = next((e for e in ours["per_epoch"] if e["val_auc"] is not None and seed_final is not None
                    and e["val_auc"] >= seed_final), None)
    ours_spe = float(np.mean([e["seconds"] for e in ours["per_epoch"]]))
    seed_spe = float(np.mean(seed["seconds_per_epoch"]))
    best = max((e["val_auc"] for e in ours["per_epoch"] if e["val_auc"] is not None), default=None)
    result = {
        "seed_recipe": dict(SEED_RECIPE, epochs=seed_epochs, loader="image_dataset_from_directory over per-split "
                            "folders of symlinks to cxr_core's patient split", **seed),
        "ours": ours,
        "seed_final_val_auc": seed_final, "ours_best_val_auc": best,
        "ours_final_val_auc": ours["per_epoch"][-1]["val_auc"],
        "ours_reached_seed_quality_at": None if reached is None else {"epoch": reached["epoch"], "wall_s": reached["wall_s"]},
        "time_to_quality_ratio": None if reached is None else reached["wall_s"] / seed["total_wall_s"],
        "seconds_per_epoch_ratio": ours_spe / seed_spe, "ours_seconds_per_epoch": ours_spe, "seed_seconds_per_epoch": seed_spe,
        "quality_at_least_seed": None if best is None or seed_final is None else best >= seed_final,
        "timing": "wall time from each child process's start (Python and TensorFlow start-up, data loading or "
                  "decoding, and each epoch's validation included) to the end of each epoch",
    }
    print(f"  seed final val AUC {seed_final}, {seed_spe:.1f} s/epoch; ours best {best}, {ours_spe:.1f} s/epoch; "
          f"time-to-quality ratio {result['time_to_quality_ratio']}", flush=True)
    return result


# ---------------------------------------------------------------- (3) prediction latency


def upload_jpeg(split) -> bytes:
    """A 2000x2000 JPEG made from a real image of the data set (upscaled), as a person would upload it."""
    from PIL import Image

    with Image.open(sorted(split["path"])[0]) as image:
        big = image.convert("L").resize((2000, 2000), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def profiled(enabled: bool, *roots):
    """A StackSampler when --profile is given, else a no-op; the sampler slows what it watches a little."""
    return common.StackSampler(roots=roots) if enabled else contextlib.nullcontext()


def latency(call, calls: int, profile: bool = False) -> dict:
    started = time.perf_counter()
    call()  # the first call traces the graph: reported, not counted
    first = time.perf_counter() - started
    times = []
    with profiled(profile) as sampler:
        for _ in range(calls):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
    p50, p95 = np.percentile(times, [50, 95])
    result = {"first_call_ms": first * 1000, "p50_ms": float(p50), "p95_ms": float(p95),
              "mean_ms": float(np.mean(times)), "calls": calls}
    if sampler:
        result["profile"] = sampler.top()
    return result


def section_predict(ctx) -> dict:
    import keras

    from cxr_core import explain, images, inference
    from cxr_core.models import build_model

    upload = upload_jpeg(ctx.split)
    results = {"upload_bytes": len(upload), "upload_pixels": "2000x2000", "calls": ctx.args.calls,
               "weights": "untrained (latency does not depend on weight values); saved and loaded as .keras with "
                          "safe_mode=True like the dashboard", "models": {}}
    folder = fresh(ctx.work / "predict-models")
    for name in ctx.args.predict_models.split(","):
        settings = default_settings(name)
        settings.weights = "none"
        path = folder / f"{name}.keras"
        build_model(settings).save(path)
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
        loaded = inference.LoadedRun(f"bench-{name}", model, 0.5, settings.image_size, name)

        def heat_map():
            pixels = images.load_for_model(upload, loaded.image_size, name="upload.jpg")
            return explain.overlay(pixels[..., 0], explain.gradcam(model, pixels))

        results["models"][name] = {
            "image_size": settings.image_size,
            "predict": latency(lambda: inference.predict_image(loaded, upload, name="upload.jpg"), ctx.args.calls,
                               ctx.args.profile),
            "gradcam": latency(heat_map, ctx.args.calls, ctx.args.profile),
        }
        row = results["models"][name]
        print(f"  {name}: predict p95 {row['predict']['p95_ms']:.0f} ms, Grad-CAM p95 {row['gradcam']['p95_ms']:.0f} ms", flush=True)
    results["gradcam_what"] = "decode + preprocess the upload, explain.gradcam, explain.overlay at model size"
    return results


# ---------------------------------------------------------------- (4) pages


def discover_pages(app: Path) -> list[str]:
    """Page files relative to app.py's folder: the .py paths app.py names (st.Page("...")), else the
    *.py in pages/ or app_pages/ that are not helper modules (imported by a page, or named like one)."""
    root = app.parent
    text = app.read_text() if app.is_file() else ""
    named = [str(Path(p)) for p in re.findall(r"""["']([\w./-]+\.py)["']""", text)]
    named = list(dict.fromkeys(p for p in named if (root / p).is_file() and (root / p).resolve() != app.resolve()))
    if named:
        return named
    files = sorted([*(root / "pages").glob("*.py"), *(root / "app_pages").glob("*.py")])
    sources = {f: f.read_text(errors="replace") for f in files}
    imported = {f.stem for f in files for src in sources.values()
                if re.search(rf"^\s*(from|import)\s+(\w+\.)?{re.escape(f.stem)}\b", src, re.M)}
    return [str(f.relative_to(root)) for f in files
            if not f.stem.startswith("_") and f.stem not in HELPER_STEMS and f.stem not in imported
            and re.search(r"\bst\.\w+\(", sources[f])]


def make_page_store(ctx) -> Path:
    """10 finished runs: one tiny real run (1 epoch, 64 px) on the bench data, copied under new ids."""
    if ctx.page_store:
        return ctx.page_store
    store = fresh(ctx.work / "page-runs")
    env = common.cli_env(CXR_CACHE_DIR=ctx.work / "cache-pages")
    originals = []
    for model in ("regularized_cnn",):
        child = common.run_child([sys.executable, "-m", "cxr_core", "train", "--data", str(ctx.data), "--model", model,
                                  "--runs", str(store), "--epochs", "1", "--image-size", "64"], env=env, echo=False)
        if child["rc"] != 0:
            raise RuntimeError(f"could not train a tiny {model} run: {' | '.join(child['lines'][-3:])}")
        originals.append(store / child["lines"][-1].strip())
    created = time.time()
    for i in range(10 - len(originals)):
        source = originals[i % len(originals)]
        model = json.loads((source / "settings.json").read_text())["model"]
        copy = store / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-c{i:03x}"
        shutil.copytree(source, copy)
        status = json.loads((copy / "status.json").read_text())
        status["created"] = created - 60 * (i + 1)
        (copy / "status.json").write_text(json.dumps(status))
    ctx.page_store = store
    return store


def select_runs(at, run_ids: list[str], count: int = 5) -> int | None:
    """Pick `count` runs in the page's first multiselect that offers them; returns how many, None if none does."""
    for widget in at.multiselect:
        labels = list(widget.options)
        candidates = [r for r in run_ids if str(widget.format_func(r)) in labels] or list(labels)
        limit = widget.max_selections or count
        chosen = list(dict.fromkeys(candidates))[:min(count, limit)]
        if len(chosen) >= min(count, len(labels)) and len(chosen) > 1:
            widget.set_value(chosen)
            return len(chosen)
    return None


def page_env(ctx, store: Path) -> dict:
    return {"CXR_RUNS_DIR": store, "CXR_DATA_DIR": ctx.data, "CXR_CACHE_DIR": ctx.work / "cache-pages"}


def pages_child(spec: dict) -> None:
    """Child process (a fresh interpreter, like a server just started): time every page under AppTest."""
    from streamlit.testing.v1 import AppTest

    app, timeout, profile = spec["app"], spec["timeout"], spec["profile"]
    result = {"pages": [], "compare": None}
    default_title = None
    started = time.perf_counter()
    AppTest.from_file(app, default_timeout=timeout).run()
    result["app_first_run_s"] = time.perf_counter() - started  # imports and the default page, cold process
    for page in [None, *spec["pages"]]:
        row = {"page": page or "(default page of app.py)"}
        try:
            at = AppTest.from_file(app, default_timeout=timeout)
            if page:  # the default page renders first, as when a student opens the app, then they click
                at.run().switch_page(page)
            had_tensorflow = "tensorflow" in sys.modules
            with profiled(profile, Path(app).parent) as sampler:
                started = time.perf_counter()
                at.run()
                row["first_visit_s"] = time.perf_counter() - started
            if sampler:
                row["profile"] = sampler.top()
            # The first page to need TensorFlow pays its import (seconds), once per server process.
            row["imported_tensorflow"] = not had_tensorflow and "tensorflow" in sys.modules
            started = time.perf_counter()
            at.run()
            row["rerun_s"] = time.perf_counter() - started
            row["exceptions"] = [e.value[:300] for e in at.exception]
            row["title"] = next((e.value for e in [*at.title, *at.header]), None)  # proves the switch landed
            if page is None:
                default_title = row["title"]
            elif row["title"] is not None and row["title"] == default_title:
                # A page that redirects (st.switch_page) would otherwise be timed as the home page.
                row["error"] = (f"switch_page did not reach {page}: the default page rendered instead "
                                f"(title {row['title']!r}); this time is not the page's")
            if page and "compare" in Path(page).stem.lower():
                chosen = select_runs(at, spec["run_ids"])
                if chosen:
                    with profiled(profile, Path(app).parent) as sampler:
                        started = time.perf_counter()
                        at.run()
                        seconds = time.perf_counter() - started
                    result["compare"] = {"page": page, "runs_selected": chosen, "seconds": seconds,
                                         "selected_after_run": max((len(w.value) for w in at.multiselect), default=0),
                                         "exceptions": [e.value[:300] for e in at.exception],
                                         "profile": sampler.top() if sampler else None}
        except Exception as error:  # a page being written right now may not run yet
            row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        result["pages"].append(row)
    print(json.dumps(result), flush=True)


def section_pages(ctx) -> dict:
    app = ctx.args.app.resolve()
    if not app.is_file():
        return {"error": f"{app} not found", "pages": []}
    pages = discover_pages(app)
    store = make_page_store(ctx)
    run_ids = sorted(p.name for p in store.iterdir() if p.is_dir() and not p.name.startswith("."))
    spec = {"app": str(app), "pages": pages, "run_ids": run_ids, "timeout": ctx.args.page_timeout,
            "profile": ctx.args.profile}
    child = common.run_child([sys.executable, __file__, "--child", "pages", "--child-spec", json.dumps(spec)],
                             env=common.cli_env(**page_env(ctx, store)), echo=False)
    if child["rc"] != 0:
        raise RuntimeError(" | ".join(child["lines"][-3:]))
    result = dict(json.loads(child["lines"][-1]), app=str(app), runs_in_store=len(run_ids),
                  apptest_process_peak_rss_mib=child["peak_rss_mib"],
                  what="AppTest in a fresh child process: app.py run once (cold), then per page a new session: the "
                       "default page, switch_page + run (first visit, timed), run again (rerun, timed)")
    for row in result["pages"]:
        print(f"  {row['page']}: " + (row["error"] if "error" in row else
              f"{row['first_visit_s']:.2f} s first visit, {row['rerun_s']:.2f} s rerun"), flush=True)
    if not pages:
        result["note"] = "no page files found next to app.py; only app.py's default page was timed"
    return result


# ---------------------------------------------------------------- (5) memory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_memory(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def wait_idle(page, timeout_ms: int = 120_000) -> None:
    page.wait_for_timeout(300)  # let the click's rerun start before asking whether it finished
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)


def dashboard_memory_browser(ctx, store: Path) -> dict:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    app = ctx.args.app.resolve()
    port = free_port()
    log = open(ctx.work / "streamlit.log", "w")
    env = common.cli_env(**page_env(ctx, store))
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
                               "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                              cwd=app.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    visited = []
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("streamlit did not start; see streamlit.log")
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
            page = browser.new_page()
            started = time.perf_counter()
            page.goto(url)
            wait_idle(page)
            visited.append({"page": "(landing)", "seconds": time.perf_counter() - started})
            links = page.locator('[data-testid="stSidebarNavLink"]')
            for i in range(links.count()):
                name = links.nth(i).inner_text().strip().splitlines()[-1]  # the label, after the icon's name
                started = time.perf_counter()
                links.nth(i).click()
                wait_idle(page)
                visited.append({"page": name, "seconds": time.perf_counter() - started})
            browser.close()
        memory = proc_memory(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    return {"method": "`streamlit run app.py` driven by Playwright on Debian's Chromium; /proc VmHWM of the server",
            "peak_rss_mib": memory["VmHWM"], "rss_at_end_mib": memory["VmRSS"], "visited": visited}


def apptest_visit_child(spec: dict) -> None:
    from streamlit.testing.v1 import AppTest

    for page in [None] + spec["pages"]:
        at = AppTest.from_file(spec["app"], default_timeout=spec["timeout"]).run()
        if page:
            at.switch_page(page).run()


def dashboard_memory_apptest(ctx, store: Path) -> dict:
    app = ctx.args.app.resolve()
    spec = {"app": str(app), "pages": discover_pages(app), "timeout": ctx.args.page_timeout}
    child = common.run_child([sys.executable, __file__, "--child", "apptest-visit", "--child-spec", json.dumps(spec)],
                             env=common.cli_env(**page_env(ctx, store)), echo=False)
    if child["rc"] != 0:
        raise RuntimeError(" | ".join(child["lines"][-3:]))
    return {"method": "AppTest visiting every page in a child process; wait4 ru_maxrss",
            "peak_rss_mib": child["peak_rss_mib"], "visited": spec["pages"]}


def section_memory(ctx) -> dict:
    result = {}
    if ctx.training_peak:
        result["training"] = dict(ctx.training_peak, source="the training section's regularized_cnn run")
    else:
        print("  training run (regularized_cnn defaults"
              + (f", --epochs {ctx.args.epochs}" if ctx.args.epochs else "") + ")", flush=True)
        ours = train_ours(ctx, ctx.args.epochs, "memory")
        result["training"] = {"peak_rss_mib": ours["peak_rss_mib"], "epochs": len(ours["per_epoch"]),
                              "limit": ctx.args.limit, "source": "`python -m cxr_core train` child; wait4 ru_maxrss"}
    print(f"  training peak {result['training']['peak_rss_mib']:.0f} MiB", flush=True)
    if ctx.args.app.resolve().is_file():
        store = make_page_store(ctx)
        chromium = shutil.which("chromium") or (Path("/usr/bin/chromium").is_file() and "/usr/bin/chromium")
        try:
            if not chromium:
                raise RuntimeError("no chromium on this machine")
            result["dashboard"] = dashboard_memory_browser(ctx, store)
        except Exception as error:
            print(f"  browser method failed ({type(error).__name__}: {str(error)[:200]}); using AppTest", flush=True)
            result["dashboard"] = dict(dashboard_memory_apptest(ctx, store),
                                       browser_error=f"{type(error).__name__}: {str(error)[:300]}")
        print(f"  dashboard peak {result['dashboard']['peak_rss_mib']:.0f} MiB", flush=True)
    return result


# ---------------------------------------------------------------- (6) scale


def synthetic_folder(split, count: int, out: Path) -> Path:
    """`count` distinct JPEG files (copies of a few hundred real ones under new names), Kaggle layout."""
    root = fresh(out)
    sources = {}
    for label, cls in enumerate(CLASSES):
        paths = sorted(split.loc[split.label == label, "path"])[:300]
        sources[cls] = [Path(p).read_bytes() for p in paths]
        (root / "train" / cls).mkdir(parents=True)
    normal_share = (split.label == 0).mean()
    for i in range(count):
        cls = "NORMAL" if i < round(count * normal_share) else "PNEUMONIA"
        name = f"IM-{i:06d}-0001.jpeg" if cls == "NORMAL" else f"person{i}_bacteria_{i}.jpeg"
        (root / "train" / cls / name).write_bytes(sources[cls][i % len(sources[cls])])
    return root


def scale_child(spec: dict) -> None:
    from cxr_core import pipeline

    os.environ["CXR_CACHE_DIR"] = spec["cache"]
    split = patient_split(Path(spec["data"]))
    started = time.perf_counter()
    cache = pipeline.build_cache(split["path"].tolist(), spec["image_size"])
    decode_s = time.perf_counter() - started
    frame = pipeline.readable(split, cache)
    train = frame[frame.split == "train"]
    # TensorFlow's one-off start-up (runtime, first graph) is not the pipeline's throughput.
    warm_up = pipeline.make_dataset(cache, train["row"].iloc[:BATCH], train["label"].iloc[:BATCH], batch_size=BATCH,
                                    shuffle=False)
    sum(int(x.shape[0]) for x, _ in warm_up)
    started = time.perf_counter()
    ds = pipeline.make_dataset(cache, train["row"], train["label"], batch_size=BATCH, shuffle=True, seed=42)
    n = sum(int(x.shape[0]) for x, _ in ds)
    epoch_s = time.perf_counter() - started
    print(json.dumps({"images": len(split), "decode_s": decode_s, "decode_images_per_s": len(split) / decode_s,
                      "epoch_images": n, "epoch_s": epoch_s, "epoch_images_per_s": n / epoch_s,
                      "cache_mib": cache.path.stat().st_size / 2**20}), flush=True)


def section_scale(ctx) -> dict:
    size = default_settings("regularized_cnn").image_size
    rows = []
    for count in sorted({max(200, ctx.args.scale_images // 10), ctx.args.scale_images}):
        print(f"  {count} images", flush=True)
        folder = synthetic_folder(ctx.split, count, ctx.work / f"scale-{count}")
        spec = {"data": str(folder), "image_size": size, "cache": str(fresh(ctx.work / f"cache-scale-{count}"))}
        child = common.run_child([sys.executable, __file__, "--child", "scale", "--child-spec", json.dumps(spec)],
                                 echo=False)
        if child["rc"] != 0:
            raise RuntimeError(" | ".join(child["lines"][-3:]))
        row = dict(json.loads(child["lines"][-1]), peak_rss_mib=child["peak_rss_mib"])
        rows.append(row)
        print(f"    decode {row['decode_images_per_s']:.0f} img/s, epoch {row['epoch_images_per_s']:.0f} img/s, "
              f"peak {row['peak_rss_mib']:.0f} MiB, cache {row['cache_mib']:.0f} MiB", flush=True)
        if not ctx.args.keep:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(spec["cache"], ignore_errors=True)
    return {"image_size": size, "runs": rows, "what": "scan + patient split + decode every image into the "
            "on-disk cache + one shuffled epoch over the train split, in a child process; distinct JPEG files "
            "copied from real ones", "memory_growth_mib": rows[-1]["peak_rss_mib"] - rows[0]["peak_rss_mib"],
            "cache_growth_mib": rows[-1]["cache_mib"] - rows[0]["cache_mib"]}


# ---------------------------------------------------------------- report


def section_flags(name: str, args) -> str:
    """The flags that shortened or changed this section's measurement (empty: the full figure)."""
    flags = [("limit", args.limit)]
    if name in ("training", "memory"):
        flags.append(("epochs", args.epochs))
    if name == "scale" and args.scale_images != 20000:
        flags.append(("scale-images", args.scale_images))
    if name == "predict" and args.calls != 50:
        flags.append(("calls", args.calls))
    return " ".join(f"--{k} {v}" for k, v in flags if v)


def verdict(value, target, smaller_is_better=True) -> str:
    if value is None:
        return "n/a"
    return "yes" if (value <= target if smaller_is_better else value >= target) else "NO"


def summary(sections: dict) -> list[list]:
    rows = []
    flags = lambda s: f" ({s['flags_note']})" if s.get("flags_note") else ""  # noqa: E731
    t = sections.get("training")
    if t and "error" not in t:
        ratio = t["time_to_quality_ratio"]
        rows.append([f"time to the seed recipe's val AUC, ours / seed{flags(t)}",
                     "not reached" if ratio is None else f"{ratio:.2f} ({1 / ratio:.1f}x faster)",
                     "<= 0.5 (2x faster)", "NO" if ratio is None else verdict(ratio, TARGETS["time_to_quality_ratio"])])
        rows.append([f"best val AUC ours vs seed final{flags(t)}",
                     f"{common.fmt(t['ours_best_val_auc'])} vs {common.fmt(t['seed_final_val_auc'])}",
                     "at least as good", {True: "yes", False: "NO", None: "n/a"}[t["quality_at_least_seed"]]])
        rows.append([f"seconds per epoch, ours / seed{flags(t)}",
                     f"{t['seconds_per_epoch_ratio']:.2f} ({t['ours_seconds_per_epoch']:.1f} s vs {t['seed_seconds_per_epoch']:.1f} s)", "-", "-"])
    p = sections.get("pipeline")
    if p and "error" not in p:
        rows.append([f"input pipeline images/s, ours warm / cold / seed loader{flags(p)}",
                     f"{p['ours_warm']['images_per_s']:.0f} / {p['ours_cold']['images_per_s']:.0f} / "
                     f"{p['seed_loader']['images_per_s']:.0f} ({p['warm_vs_seed']:.1f}x, {p['cold_vs_seed']:.1f}x)", "-", "-"])
    pr = sections.get("predict")
    if pr and "error" not in pr:
        for name, row in pr["models"].items():
            rows.append([f"prediction p50 / p95, {name} ({row['image_size']} px){flags(pr)}",
                         f"{row['predict']['p50_ms']:.0f} / {row['predict']['p95_ms']:.0f} ms", "p95 <= 150 ms",
                         verdict(row["predict"]["p95_ms"], TARGETS["predict_p95_ms"])])
            rows.append([f"Grad-CAM p50 / p95, {name}", f"{row['gradcam']['p50_ms']:.0f} / {row['gradcam']['p95_ms']:.0f} ms",
                         "p95 <= 500 ms", verdict(row["gradcam"]["p95_ms"], TARGETS["gradcam_p95_ms"])])
    pg = sections.get("pages")
    if pg and "error" not in pg:
        for row in pg["pages"]:
            value = row.get("first_visit_s")
            shown = row["error"] if "error" in row else f"{value:.2f} s (rerun {row['rerun_s']:.2f} s)" + (
                ", TensorFlow import included" if row.get("imported_tensorflow") else "") + (
                f", {len(row['exceptions'])} exception(s)" if row.get("exceptions") else "")
            rows.append([f"page {row['page']}, first visit, {pg['runs_in_store']} runs stored{flags(pg)}", shown,
                         "<= 1.5 s", "NO" if "error" in row or row.get("exceptions") else verdict(value, TARGETS["page_s"])])
        compare_pages = [r["page"] for r in pg["pages"] if "compare" in Path(r["page"]).stem.lower()]
        if compare_pages and not pg.get("compare"):
            rows.append([f"{compare_pages[0]} with 5 runs selected", "not measured: the page showed no multiselect "
                         "of runs (or was not reached)", "<= 1.5 s", "n/a"])
        if pg.get("compare"):
            c = pg["compare"]
            rows.append([f"{c['page']} with {c['runs_selected']} runs selected", f"{c['seconds']:.2f} s", "<= 1.5 s",
                         verdict(c["seconds"], TARGETS["page_s"])])
    m = sections.get("memory")
    if m and "error" not in m:
        tr = m.get("training")
        if tr:
            seed_peak = (t or {}).get("seed_recipe", {}).get("peak_rss_mib") if tr.get("source", "").startswith("the training") else None
            rows.append([f"training peak memory, regularized_cnn ({tr['epochs']} epochs){flags(m)}",
                         f"{tr['peak_rss_mib'] / 1024:.2f} GiB" + (f" (seed recipe {seed_peak / 1024:.2f} GiB)" if seed_peak else ""),
                         "<= 3 GiB", verdict(tr["peak_rss_mib"] / 1024, TARGETS["training_peak_gib"])])
        d = m.get("dashboard")
        if d:
            rows.append([f"dashboard peak memory after every page ({d['method'].split(';')[0]})",
                         f"{d['peak_rss_mib'] / 1024:.2f} GiB", "<= 1.5 GiB", verdict(d["peak_rss_mib"] / 1024, TARGETS["dashboard_peak_gib"])])
    s = sections.get("scale")
    if s and "error" not in s:
        small, large = s["runs"][0], s["runs"][-1]
        rows.append([f"scale: {large['images']} images, decode / epoch images/s{flags(s)}",
                     f"{large['decode_images_per_s']:.0f} / {large['epoch_images_per_s']:.0f}", "-", "-"])
        rows.append([f"scale: peak memory at {small['images']} vs {large['images']} images (cache file)",
                     f"{small['peak_rss_mib']:.0f} vs {large['peak_rss_mib']:.0f} MiB ({small['cache_mib']:.0f} vs {large['cache_mib']:.0f} MiB on disk)",
                     "bounded", "yes" if large["peak_rss_mib"] - small["peak_rss_mib"] < 0.5 * (large["cache_mib"] - small["cache_mib"]) + 100 else "NO"])
    for name, section in sections.items():
        if "error" in section:
            rows.append([f"{name} section", f"failed: {section['error']}", "-", "NO"])
    return rows


def profiles(sections: dict) -> list[str]:
    """Markdown lines: the sampled profiles (--profile), where the time of each slow item went."""
    found = []
    for row in (sections.get("pages") or {}).get("pages", []):
        if row.get("profile"):
            found.append((f"page {row['page']}, first visit ({row['first_visit_s']:.2f} s)", row["profile"]))
    compare = (sections.get("pages") or {}).get("compare") or {}
    if compare.get("profile"):
        found.append((f"{compare['page']} with {compare['runs_selected']} runs ({compare['seconds']:.2f} s)", compare["profile"]))
    for name, row in ((sections.get("predict") or {}).get("models") or {}).items():
        for kind in ("predict", "gradcam"):
            if row[kind].get("profile"):
                found.append((f"{kind} {name} (p95 {row[kind]['p95_ms']:.0f} ms)", row[kind]["profile"]))
    lines = []
    for title, profile in found:
        if profile["samples"] < 5:
            continue  # too quick to say where its time went
        inclusive = ", ".join(f"{p['function']} {p['share']:.0%}" for p in profile["inclusive_project"][:6])
        own = ", ".join(f"{p['function']} {p['share']:.0%}" for p in profile["self"][:6])
        lines += [f"- {title}, {profile['samples']} samples: in project code: {inclusive}; on top of the stack: {own}"]
    return lines


def render(result: dict, full: bool = True) -> str:
    lines = [f"Generated by `{result['command']}` on {result['date']}.",
             f"Machine: {common.machine_line(result['machine'])}.", "",
             f"Data: `{result['data']}`. Other work shared this machine, so absolute times drift; "
             "ours and the seed's are measured in the same run and compared as ratios.", "",
             common.markdown_table(["figure", "measured", "target", "met"], summary(result["sections"])), ""]
    notes = []
    for name, section in result["sections"].items():
        command = section.get("command")
        notes.append(f"{name}: measured {section.get('date', '?')}" + (f" with {section['flags_note']}" if section.get("flags_note") else "")
                     + (f" by `{command}`" if command and command != result["command"] else ""))
    t = result["sections"].get("training")
    if t and "error" not in t:
        notes.append("training: ours is `python -m cxr_core train --model regularized_cnn` (defaults, cold private cache: "
                     f"decoding included); the seed recipe is the seed's CNN at 180x180 RGB, {t['seed_recipe']['epochs']} epochs, "
                     "Adam 1e-3, read by image_dataset_from_directory from per-split folders of symlinks to the same "
                     f"patient split. Times are {t['timing']}.")
    if "predict" in result["sections"] and "error" not in result["sections"]["predict"]:
        notes.append("prediction: one 2000x2000 JPEG's bytes, decode + preprocess + predict with the model loaded; "
                     f"Grad-CAM: {result['sections']['predict']['gradcam_what']}; p50/p95 over "
                     f"{result['sections']['predict']['calls']} calls after one warm-up call.")
    lines += [f"- {n}" for n in notes]
    if not full:
        lines.append("- Per-epoch figures, every section's details and any profiles: `benchmarks/results/speed.json` and `speed.md`.")
    if full and t and "error" not in t:
        seed_rows, ours_rows = t["seed_recipe"]["per_epoch"], t["ours"]["per_epoch"]
        def cells(rows, i):
            return ["-", "-"] if i >= len(rows) else [rows[i]["val_auc"], f"{rows[i]['wall_s']:.1f}"]

        table = [[i + 1, *cells(ours_rows, i), *cells(seed_rows, i)] for i in range(max(len(seed_rows), len(ours_rows)))]
        lines += ["", "## Training, epoch by epoch (wall seconds since the process started)", "",
                  common.markdown_table(["epoch", "ours val AUC", "ours wall s", "seed val AUC", "seed wall s"], table)]
    found = profiles(result["sections"]) if full else []
    if found:
        lines += ["", "## Where the time goes (sampled stacks, `--profile`)", "", *found]
    return "\n".join(lines)


class Context:
    def __init__(self, args, data: Path, work: Path):
        self.args, self.data, self.work = args, data, work
        self.split = patient_split(data)
        self.page_store = None
        self.training_peak = None
        self._links = None

    def links(self) -> dict[str, Path]:
        if self._links is None:
            self._links = split_link_folders(self.split, self.work / "split-links")
        return self._links


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA, help="Kaggle-layout folder (default: %(default)s)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections (default: all: {','.join(SECTIONS)})")
    p.add_argument("--limit", type=int, help="use only N train images (whole patients, classes in proportion)")
    p.add_argument("--epochs", type=int, help="cap training epochs of ours and the seed recipe (default: ours' default, seed 10)")
    p.add_argument("--calls", type=int, default=50, help="timed prediction calls (default: %(default)s)")
    p.add_argument("--predict-models", default=",".join(MODEL_NAMES), help="models to time predictions of (default: all)")
    p.add_argument("--scale-images", type=int, default=20000, help="images in the synthetic scale folder (default: %(default)s)")
    p.add_argument("--app", type=Path, default=common.PROJECT_ROOT / "app.py", help="the dashboard's entry script")
    p.add_argument("--page-timeout", type=float, default=120.0, help="seconds before AppTest gives up on a page")
    p.add_argument("--profile", action="store_true",
                   help="sample stacks during page visits and predictions: where the time goes, in the JSON")
    p.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="where speed.json/.md go (default: %(default)s)")
    p.add_argument("--work", type=Path, default=common.WORK_DIR, help="scratch folder (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--update-readme", action="store_true", help="replace the README's speed section")
    p.add_argument("--readme", type=Path, default=common.README, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="do not echo the training output")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        spec = json.loads(args.child_spec)
        children = {"seed-train": seed_train_child, "scale": scale_child, "pages": pages_child,
                    "apptest-visit": apptest_visit_child}
        children[args.child](spec)
        return 0

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if not only or any(s not in SECTIONS for s in only):
        raise SystemExit(f"--only: choose from {', '.join(SECTIONS)}")
    bad_models = [m for m in args.predict_models.split(",") if m not in MODEL_NAMES]
    if bad_models:
        raise SystemExit(f"--predict-models: unknown {bad_models}")
    flags_note = " ".join(f"--{k} {v}" for k, v in (("limit", args.limit), ("epochs", args.epochs)) if v)
    print(f"speed benchmark: sections {','.join(only)}; flags: {flags_note or 'none (full figures)'}", flush=True)
    print(f"  {common.command_line()}", flush=True)

    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="speed-", dir=args.work))
    data = args.data.expanduser().resolve()
    try:
        if args.limit:
            data = limited_copy(data, args.limit, work / f"data-limit-{args.limit}", seed=0)
        ctx = Context(args, data, work)
    except UserError as error:  # a wrong --data: one line, like the CLI
        shutil.rmtree(work, ignore_errors=True)
        print(f"error: {error}", file=sys.stderr)
        return 2

    previous = {}
    try:
        previous = json.loads((args.out / "speed.json").read_text()).get("sections", {})
    except (OSError, ValueError):
        pass
    result = {"benchmark": "speed", "command": common.command_line(), "date": common.now_iso(),
              "machine": common.machine(), "data": str(args.data.expanduser().resolve()), "targets": TARGETS,
              "sections": {k: v for k, v in previous.items() if k not in only and k in SECTIONS}}
    failed = False
    try:
        for name in SECTIONS:
            if name not in only:
                continue
            print(f"[{name}]", flush=True)
            started = time.perf_counter()
            try:
                section = globals()[f"section_{name}"](ctx)
            except Exception as error:  # keep the other sections' figures
                failed = True
                print(f"  FAILED: {type(error).__name__}: {error}", flush=True)
                section = {"error": f"{type(error).__name__}: {str(error)[:500]}"}
            section.update(date=common.now_iso(), seconds=time.perf_counter() - started,
                           flags_note=section_flags(name, args), machine=result["machine"], command=result["command"])
            result["sections"][name] = section
            result["date"] = common.now_iso()
            common.write_results(args.out, "speed", result, "# Speed benchmark\n\n" + render(result))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    body = render(result, full=False)
    print("\n" + render(result))
    if args.update_readme:
        common.update_readme("speed", body, args.readme)
        print(f"\nREADME speed section updated: {args.readme}")
    print(f"\nwrote {args.out / 'speed.json'} and {args.out / 'speed.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The speed benchmark's other sections: input pipeline, prediction, pages and dashboard memory.

Each `section_*(ctx)` returns its JSON; `*_child(spec)` runs in a fresh interpreter (speed.py --child).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from speed import child_command, fresh

import common
from cxr_core import registry
from cxr_core.config import CLASSES

BATCH = 32


def section_pipeline(ctx) -> dict:
    """One shuffled epoch of the train split: ours cold (decoding included) and warm, and the study's loader."""
    import keras

    from cxr_core import pipeline

    train = ctx.split[ctx.split.split == "train"]
    paths, labels = train["path"].tolist(), train["label"].to_numpy()
    size = registry.default_settings(registry.DEFAULT_MODEL).image_size
    links = fresh(ctx.work / "split-links")
    for i, row in enumerate(train.itertuples()):  # the layout the study's loader reads; names made unique
        (links / row.class_name).mkdir(exist_ok=True)
        (links / row.class_name / f"{i}_{Path(row.path).name}").symlink_to(row.path)
    for path in paths:  # the page cache warm for both loaders
        Path(path).read_bytes()
    os.environ["CXR_CACHE_DIR"] = str(fresh(ctx.work / "cache-pipeline"))  # ours' first epoch decodes: cold

    def timed(make) -> tuple[int, float]:
        started = time.perf_counter()
        return sum(int(x.shape[0]) for x, _ in make()), time.perf_counter() - started

    def study():
        return keras.utils.image_dataset_from_directory(
            links, label_mode="binary", class_names=list(CLASSES), color_mode="rgb", image_size=(180, 180),
            batch_size=BATCH, shuffle=True, seed=42, verbose=False)

    def ours():
        cache = pipeline.build_cache(paths, size)
        return pipeline.make_dataset(cache, np.arange(len(paths)), labels, batch_size=BATCH, shuffle=True, seed=42)

    _, study_first_s = timed(study)  # its first epoch also pays TensorFlow's one-off start-up
    counts, seconds = zip(timed(study), *[timed(ours) for _ in range(2)], strict=True)
    if set(counts) != {len(paths)}:
        raise RuntimeError(f"an epoch saw {counts} images, not {len(paths)}")
    rates = [len(paths) / s for s in seconds]
    print(f"  study's loader {rates[0]:.0f} img/s, ours cold {rates[1]:.0f}, warm {rates[2]:.0f}", flush=True)
    return {"images": len(paths),
            "seed_loader": {"what": "keras.utils.image_dataset_from_directory, 180x180 RGB, batch 32, shuffled",
                            "seconds": seconds[0], "images_per_s": rates[0], "first_epoch_seconds": study_first_s},
            "ours_cold": {"what": f"cxr_core pipeline, {size} px gray: decode into the cache + one epoch",
                          "seconds": seconds[1], "images_per_s": rates[1]},
            "ours_warm": {"what": "cxr_core pipeline, cache reused: one epoch", "seconds": seconds[2],
                          "images_per_s": rates[2]},
            "warm_vs_seed": rates[2] / rates[0], "cold_vs_seed": rates[1] / rates[0]}


def latency(call, calls: int) -> dict:
    started = time.perf_counter()
    call()  # the first call traces the graph: reported, not counted
    first, times = time.perf_counter() - started, []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    p50, p95 = np.percentile(times, [50, 95])
    return {"first_call_ms": first * 1000, "p50_ms": float(p50), "p95_ms": float(p95), "calls_ms": times}


def section_predict(ctx) -> dict:
    """A 2000x2000 JPEG made from a real image of the set through inference.predict_image, and Grad-CAM."""
    import keras
    from PIL import Image

    from cxr_core import explain, heatmap, images, inference
    from cxr_core.models import build_model

    with Image.open(sorted(ctx.split["path"])[0]) as image:
        buffer = io.BytesIO()
        image.convert("L").resize((2000, 2000), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    upload, folder = buffer.getvalue(), fresh(ctx.work / "predict-models")
    results = {"upload_bytes": len(upload), "upload_pixels": "2000x2000", "calls": ctx.args.calls, "models": {},
               "weights": "untrained (latency does not depend on weight values); saved and loaded as .keras with "
                          "safe_mode=True like the dashboard"}
    for name in ctx.args.predict_models.split(","):
        settings = registry.default_settings(name)
        settings.weights = "none"
        build_model(settings).save(folder / f"{name}.keras")
        model = keras.saving.load_model(folder / f"{name}.keras", safe_mode=True, compile=False)
        loaded = inference.LoadedRun(f"bench-{name}", model, 0.5, settings.image_size, name)

        def heat_map(model=model, loaded=loaded):
            pixels = images.load_for_model(upload, loaded.image_size, name="upload.jpg")
            return heatmap.overlay(pixels[..., 0], explain.gradcam(model, pixels))

        row = results["models"][name] = {
            "image_size": settings.image_size,
            "predict": latency(lambda loaded=loaded: inference.predict_image(loaded, upload, name="upload.jpg"),
                               ctx.args.calls),
            "gradcam": latency(heat_map, ctx.args.calls)}
        print(f"  {name}: predict p95 {row['predict']['p95_ms']:.0f} ms, Grad-CAM p95 {row['gradcam']['p95_ms']:.0f} ms")
    results["gradcam_what"] = "decode + preprocess the upload, explain.gradcam, heatmap.overlay at model size"
    return results


def discover_pages(app: Path) -> list[str]:
    """The page files app.py hands to st.Page, in the order written (a page given as a function is its default)."""
    return list(dict.fromkeys(page["file"] for page in common.app_pages(app) if page["file"]))


def page_store(ctx) -> Path:
    """10 finished runs: one tiny real run (1 epoch, 64 px) on the bench data, copied under new ids."""
    if ctx.page_store:
        return ctx.page_store
    store = fresh(ctx.work / "page-runs")
    child = common.run_child([sys.executable, "-m", "cxr_core", "train", "--data", str(ctx.data), "--model",
                              registry.DEFAULT_MODEL, "--runs", str(store), "--epochs", "1", "--image-size", "64"],
                             env=common.cli_env(CXR_CACHE_DIR=ctx.work / "cache-pages"), echo=False)
    if child["rc"] != 0:
        raise RuntimeError(f"could not train a tiny run: {' | '.join(child['lines'][-3:])}")
    source, created = store / child["lines"][-1].strip(), time.time()
    for i in range(9):
        copy = store / f"{time.strftime('%Y%m%d-%H%M%S')}-{registry.DEFAULT_MODEL}-c{i:03x}"
        shutil.copytree(source, copy)
        status = json.loads((copy / "status.json").read_text())
        (copy / "status.json").write_text(json.dumps(dict(status, created=created - 60 * (i + 1))))
    ctx.page_store = store
    return store


def page_env(ctx) -> dict:
    return common.cli_env(CXR_RUNS_DIR=page_store(ctx), CXR_DATA_DIR=ctx.data, CXR_CACHE_DIR=ctx.work / "cache-pages")


def visit(at, page: str | None, default_title: str | None) -> dict:
    """One page in a new AppTest session: the default page first, as a student opens the app, then a click."""
    row = {"page": page or "(default page of app.py)"}
    if page:
        at.run().switch_page(page)
    started = time.perf_counter()
    at.run()
    row["first_visit_s"] = time.perf_counter() - started
    started = time.perf_counter()
    at.run()
    row["rerun_s"] = time.perf_counter() - started
    row["exceptions"] = [e.value[:300] for e in at.exception]
    row["title"] = next((e.value for e in [*at.title, *at.header]), None)  # proves the switch landed
    if page and row["title"] is not None and row["title"] == default_title:
        row["error"] = f"switch_page did not reach {page}: the default page rendered (title {row['title']!r})"
    return row


def select_runs(at, run_ids: list[str], count: int = 5) -> int | None:
    """Pick `count` runs in the page's first multiselect that offers them; None when none does."""
    for widget in at.multiselect:
        labels = list(widget.options)  # what it shows; set_value takes the values (run ids) behind them
        candidates = [r for r in run_ids if str(widget.format_func(r)) in labels] or labels
        chosen = candidates[:min(count, widget.max_selections or count)]
        if len(chosen) > 1:
            widget.set_value(chosen)
            return len(chosen)
    return None


def pages_child(spec: dict) -> None:
    """Child process (a fresh interpreter, like a server just started): time every page under AppTest."""
    from streamlit.testing.v1 import AppTest

    app, timeout = spec["app"], spec["timeout"]
    started = time.perf_counter()
    AppTest.from_file(app, default_timeout=timeout).run()
    result = {"pages": [], "compare": None, "app_first_run_s": time.perf_counter() - started}
    for page in [None, *spec["pages"]]:
        at = AppTest.from_file(app, default_timeout=timeout)
        try:
            row = visit(at, page, result["pages"][0].get("title") if result["pages"] else None)
        except Exception as error:  # a page being written right now may not run yet
            row = {"page": page, "error": f"{type(error).__name__}: {str(error)[:300]}"}
        result["pages"].append(row)
        if page and "compare" in Path(page).stem.lower() and "error" not in row and (chosen := select_runs(at, spec["run_ids"])):
            started = time.perf_counter()
            at.run()
            result["compare"] = {"page": page, "runs_selected": chosen, "seconds": time.perf_counter() - started,
                                 "selected_after_run": max((len(w.value) for w in at.multiselect), default=0),
                                 "exceptions": [e.value[:300] for e in at.exception]}
    print(json.dumps(result), flush=True)


def section_pages(ctx) -> dict:
    app = ctx.args.app.resolve()
    if not app.is_file():
        raise RuntimeError(f"{common.project_relative(app)} not found (--app)")
    store = page_store(ctx)
    run_ids = sorted(p.name for p in store.iterdir() if p.is_dir() and not p.name.startswith("."))
    spec = {"app": str(app), "pages": discover_pages(app), "timeout": 120.0, "run_ids": run_ids}
    child = common.run_child(child_command("pages", spec), env=page_env(ctx), echo=False)
    if child["rc"] != 0:
        raise RuntimeError(" | ".join(child["lines"][-3:]))
    result = dict(json.loads(child["lines"][-1]), app=common.project_relative(app),
                  runs_in_store=len(run_ids),
                  apptest_process_peak_rss_mib=child["peak_rss_mib"],
                  what="AppTest in a fresh child process: app.py run once (cold), then per page a new session: the "
                       "default page, switch_page + run (first visit, timed), run again (rerun, timed)")
    for row in result["pages"]:
        print(f"  {row['page']}: " + (row.get("error") or f"{row['first_visit_s']:.2f} s first visit"), flush=True)
    return result


def section_memory(ctx) -> dict:
    """`streamlit run` with 10 runs stored, Chromium clicking every sidebar link; the server tree's peak RSS."""
    from dashboard import IDLE, browser, serve

    visited = []
    with serve(env=page_env(ctx), app=ctx.args.app) as url, common.TreeSampler(url.pid) as sampler, browser() as b:
        tab, links = b.new_page(), None
        while links is None or len(visited) <= links.count():
            started = time.perf_counter()
            if links is None:
                tab.goto(url)
                links, name = tab.locator('[data-testid="stSidebarNavLink"]'), "(landing)"
            else:  # the label is the link's last line, after its icon's name
                name = links.nth(len(visited) - 1).inner_text().strip().splitlines()[-1]
                links.nth(len(visited) - 1).click()
            tab.wait_for_timeout(300)  # let the click's rerun start before asking whether it finished
            tab.wait_for_function(IDLE, timeout=120_000)
            visited.append({"page": name, "seconds": time.perf_counter() - started})
        rss_at_end = sampler.usage()[0]
    print(f"  dashboard peak {sampler.peak_rss_mib:.0f} MiB over {len(visited)} pages", flush=True)
    return {"dashboard": {"method": "`streamlit run app.py` driven by Playwright on Debian's Chromium; the server's "
                          "process tree's resident memory sampled by psutil every 0.25 s",
                          "peak_rss_mib": sampler.peak_rss_mib, "rss_at_end_mib": rss_at_end, "visited": visited}}

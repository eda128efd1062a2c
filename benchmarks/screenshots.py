"""Pictures of every page for the README and docs/, taken by Debian's Chromium driven by Playwright.

    python benchmarks/screenshots.py                         # the demo set, into docs/images/
    python benchmarks/screenshots.py --data ../shared/data/chest_xray --out /tmp/shots
    python benchmarks/screenshots.py --models regularized_cnn --epochs 1 --image-size 64 --out /tmp/s   # quick

Starts the dashboard (dashboard.serve) on the demo set (on --data when given) with a private run store and
cache, first training through the CLI what Compare and Predict need (one run per --models; a --runs store
keeps its finished runs). Each page is opened 1200 px wide, settled, checked for exceptions and written as a
256-colour PNG. The last line printed is JSON: each page's file, size in pixels and bytes, and exceptions.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from dashboard import IDLE, browser, serve
from PIL import Image

import common
from cxr_core.store import RunStore

WIDTH, HEIGHT = 1200, 900
MAX_BYTES = 250_000
# name: (path and query, heading that proves the page's own script rendered, images to wait for)
PAGES = {
    "home": ("", "Chest X-ray pneumonia study", 6),
    "lesson": ("lesson?step=5", "5. Distribution shift", 0),
    "dataset": ("dataset", "Dataset explorer", 0),
    "train": ("train", "Train", 0),
    "compare": ("compare", "Compare runs", 0),
    "predict": ("predict", "Predict", 0),
}


def train_missing(models: list[str], data: Path | None, runs: Path, env: dict, extra: list[str]) -> list[str]:
    """Train each model that has no finished run on the data folder in the store; returns the run ids."""
    from cxr_core import run_tables

    store, ids = RunStore(runs), []
    for model in models:
        finished = [r for r in store.finished() if r.model == model and (not data or run_tables.trained_on(r, str(data)))]
        if finished:
            ids.append(finished[0].run_id)
            continue
        command = [sys.executable, "-m", "cxr_core", "train", "--model", model, "--runs", str(runs), *extra]
        command += ["--data", str(data)] if data else []
        print(f"training {model} for the pictures", file=sys.stderr, flush=True)
        child = common.run_child(command, env=env, echo=False)
        if child["rc"] != 0:
            raise RuntimeError(f"training {model} failed: " + " | ".join(child["lines"][-3:]))
        ids.append(child["lines"][-1].strip())
    return ids


def small_png(raw: bytes) -> bytes:
    """A palette PNG: the pages are flat colours and greys, so 256 colours lose nothing a reader sees."""
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    for colours in (256, 128, 64):
        buffer = io.BytesIO()
        image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG", optimize=True)
        if buffer.tell() <= MAX_BYTES:
            break
    return buffer.getvalue()


def settle(tab, heading: str, images: int, timeout_ms: int) -> None:
    tab.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=timeout_ms)
    tab.wait_for_function(IDLE, polling=200, timeout=timeout_ms)
    if images:  # thumbnails arrive after the script run ends
        tab.locator('[data-testid="stImage"]').nth(images - 1).wait_for(timeout=timeout_ms)
    tab.wait_for_timeout(1500)  # plotly draws after the run ends


def shoot(tab, url: str, name: str, xray: Path, out: Path, timeout_ms: int) -> dict:
    """Open one page (and on Predict upload an X-ray), check it, write its PNG; returns its record."""
    path, heading, images = PAGES[name]
    tab.goto(f"{url}/{path}", timeout=timeout_ms)
    settle(tab, heading, images, timeout_ms)
    if name == "predict":
        tab.locator("input[type='file']").set_input_files(str(xray), timeout=timeout_ms)
        tab.get_by_text("Grad-CAM: evidence for").first.wait_for(timeout=timeout_ms)
        tab.wait_for_function(IDLE, polling=200, timeout=timeout_ms)
        tab.get_by_text("P(pneumonia)").first.scroll_into_view_if_needed()
        tab.wait_for_timeout(1000)
    exceptions = tab.locator('[data-testid="stException"]').count()
    png, target = small_png(tab.screenshot()), out / f"{name}.png"
    common.atomic_write_bytes(target, png)
    os.chmod(target, 0o644)
    width, height = Image.open(io.BytesIO(png)).size
    return {"file": str(target), "width": width, "height": height, "bytes": len(png), "exceptions": exceptions}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="Kaggle-layout folder to show (default: the synthetic demo set)")
    p.add_argument("--out", type=Path, default=common.PROJECT_ROOT / "docs" / "images",
                   help="where the PNGs go (default: docs/images)")
    p.add_argument("--runs", type=Path, help="a run store to use and keep (default: a temporary one)")
    p.add_argument("--models", default="baseline_cnn,regularized_cnn", help="models trained first (default: %(default)s)")
    p.add_argument("--epochs", type=int, help="train for this many epochs (default: each model's recipe)")
    p.add_argument("--image-size", type=int, help="train at this size (default: each model's recipe)")
    p.add_argument("--timeout-s", type=float, default=180.0, help="the longest one page may take")
    args = p.parse_args(argv)
    extra = [*(["--epochs", str(args.epochs)] if args.epochs else []),
             *(["--image-size", str(args.image_size)] if args.image_size else [])]
    with ExitStack() as cleanup:
        work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="screenshots-")))
        runs = (args.runs or work / "runs").expanduser().resolve()
        data = args.data.expanduser().resolve() if args.data else None
        env = common.cli_env(CXR_RUNS_DIR=runs, CXR_CACHE_DIR=work / "cache")
        env.pop("CXR_DATA_ROOTS", None)
        env.pop("CXR_DATA_DIR", None) if data is None else env.update(CXR_DATA_DIR=str(data))
        train_missing([m.strip() for m in args.models.split(",") if m.strip()], data, runs, env, extra)
        from cxr_core.data import resolve_root

        root = resolve_root(data) if data else work / "cache" / "demo_data"
        xray = sorted((root / "test" / "PNEUMONIA").glob("*.jpeg")) or sorted(root.rglob("PNEUMONIA/*.jpeg"))
        args.out.mkdir(parents=True, exist_ok=True)
        url = cleanup.enter_context(serve(env=env, log=work / "streamlit.log", options=("--client.toolbarMode", "minimal")))
        tab = cleanup.enter_context(browser()).new_context(viewport={"width": WIDTH, "height": HEIGHT}).new_page()
        shots = {name: shoot(tab, url, name, xray[0], args.out, int(args.timeout_s * 1000)) for name in PAGES}
    print(json.dumps({"pages": shots}), flush=True)
    return 1 if any(s["exceptions"] for s in shots.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

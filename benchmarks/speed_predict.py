"""Predict section: one 2000x2000 JPEG upload through inference.predict_image (model loaded), and Grad-CAM."""

from __future__ import annotations

import contextlib
import io
import time

import numpy as np
from speed_data import fresh

import common
from cxr_core.registry import default_settings


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

    from cxr_core import explain, heatmap, images, inference
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
            return heatmap.overlay(pixels[..., 0], explain.gradcam(model, pixels))

        results["models"][name] = {
            "image_size": settings.image_size,
            "predict": latency(lambda: inference.predict_image(loaded, upload, name="upload.jpg"), ctx.args.calls,
                               ctx.args.profile),
            "gradcam": latency(heat_map, ctx.args.calls, ctx.args.profile),
        }
        row = results["models"][name]
        print(f"  {name}: predict p95 {row['predict']['p95_ms']:.0f} ms, Grad-CAM p95 {row['gradcam']['p95_ms']:.0f} ms", flush=True)
    results["gradcam_what"] = "decode + preprocess the upload, explain.gradcam, heatmap.overlay at model size"
    return results

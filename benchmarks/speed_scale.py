"""Scale section: a synthetic folder of 20,000 images; cxr_core pipeline images/s and peak memory."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from speed_data import BATCH, child_command, fresh, patient_split

import common
from cxr_core import registry
from cxr_core.config import CLASSES
from cxr_core.registry import default_settings


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
    frame = pipeline.with_cache_rows(split, cache)
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
    size = default_settings(registry.DEFAULT_MODEL).image_size
    rows = []
    for count in sorted({max(200, ctx.args.scale_images // 10), ctx.args.scale_images}):
        print(f"  {count} images", flush=True)
        folder = synthetic_folder(ctx.split, count, ctx.work / f"scale-{count}")
        spec = {"data": str(folder), "image_size": size, "cache": str(fresh(ctx.work / f"cache-scale-{count}"))}
        child = common.run_child(child_command("scale", spec),
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

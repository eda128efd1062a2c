"""Pipeline section: images/s over one epoch of the train split.

cxr_core's pipeline (cold: decoding into the cache included; warm: cache reused) against the seed's
loader, keras.utils.image_dataset_from_directory at 180 px RGB.
"""

from __future__ import annotations

import time

import numpy as np
from speed_data import BATCH, env_vars, fresh, seed_dataset, warm_page_cache

from cxr_core import registry
from cxr_core.registry import default_settings


def section_pipeline(ctx) -> dict:
    from cxr_core import pipeline

    train = ctx.split[ctx.split.split == "train"]
    paths, labels = train["path"].tolist(), train["label"].to_numpy()
    size = default_settings(registry.DEFAULT_MODEL).image_size
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

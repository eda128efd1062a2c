"""benchmarks/screenshots.py on the demo set: one PNG per page, 1200 px wide, small, no exception shown.

A quick run (one epoch at 64 px) into a temp folder: it proves the script, not the pictures in
docs/images/, which come from a full demo run (`python benchmarks/screenshots.py`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import screenshots
from dashboard import CHROMIUM
from PIL import Image

from cxr_core.config import PROJECT_ROOT

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")


def test_every_page_is_pictured_on_the_demo_set(tmp_path):
    out = tmp_path / "images"
    env = {k: v for k, v in os.environ.items() if k not in ("CXR_DATA_DIR", "CXR_RUNS_DIR", "CXR_CACHE_DIR")}
    done = subprocess.run([sys.executable, "benchmarks/screenshots.py", "--out", str(out), "--models", "regularized_cnn",
                           "--epochs", "1", "--image-size", "64"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    pages = json.loads(done.stdout.strip().splitlines()[-1])["pages"]
    assert list(pages) == ["home", "lesson", "dataset", "train", "compare", "predict"]
    for name, shot in pages.items():
        path = out / f"{name}.png"
        assert shot["file"] == str(path) and shot["exceptions"] == 0, (name, shot)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:  # what the script reported, read back from the file it wrote
            assert image.format == "PNG" and (image.width, image.height) == (shot["width"], shot["height"])
        assert image.width == screenshots.WIDTH and shot["bytes"] == path.stat().st_size <= screenshots.MAX_BYTES

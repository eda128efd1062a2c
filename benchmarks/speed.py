"""Speed benchmark: ours against the seed's way, measured in the same run, reported as ratios.

    python benchmarks/speed.py                                     # every section on ../shared/data/chest_xray
    python benchmarks/speed.py --only training --update-docs       # time to quality: 3 repeats, about 2 hours on 2 cores
    python benchmarks/speed.py --only pipeline,predict,pages       # a few sections (others keep earlier results)
    python benchmarks/speed.py --only training --limit 800 --epochs 3 --repeats 1   # a shortened smoke run
    python benchmarks/speed.py --render --update-docs              # rewrite speed.md and docs/performance.md from speed.json

Sections (`--only` takes a comma-separated subset; SECTIONS below is the table of them). Results go to
benchmarks/results/speed.json and speed.md; sections not run keep their earlier results, and every
section records the commit (and whether the tree was dirty), command, data folder and machine that
measured it. Timings on a shared machine drift: compare ours and the seed's within one run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common

# name: (module, function, what it measures). Run in this order.
SECTIONS = {
    "pipeline": ("speed_pipeline", "section_pipeline", "images/s over one epoch of the train split: cxr_core's "
                 "pipeline (cold and warm cache) vs image_dataset_from_directory at 180 px RGB"),
    "training": ("speed_training", "section_training", "time to quality on the official test dev half: the seed "
                 "regularized recipe vs our regularized_cnn defaults (and the seed baseline CNN), repeated"),
    "predict": ("speed_predict", "section_predict", "one 2000x2000 JPEG through inference.predict_image, and Grad-CAM"),
    "pages": ("speed_pages", "section_pages", "each page app.py names in st.Page, rendered under AppTest with 10 runs stored"),
    "memory": ("speed_memory", "section_memory", "peak memory of a training run and of the dashboard after every page"),
    "scale": ("speed_scale", "section_scale", "a synthetic folder of 20,000 images: pipeline images/s and peak memory"),
}
# Child processes the sections start (a fresh interpreter each): name -> (module, function).
CHILDREN = {
    "product-train": ("speed_ours", "product_train_child"),
    "pages": ("speed_pages", "pages_child"),
    "apptest-visit": ("speed_memory", "apptest_visit_child"),
    "scale": ("speed_scale", "scale_child"),
}


def function(module: str, name: str):
    # Imported on demand: a child or a section pays only for the modules it needs.
    return getattr(importlib.import_module(module), name)


def parse_args(argv):
    from speed_data import DEFAULT_TEST_DATA

    from cxr_core.registry import names

    sections_help = "\n".join(f"  {name:<9} {what}" for name, (_, _, what) in SECTIONS.items())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + "\n\nsections:\n" + sections_help,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA, help="Kaggle-layout training folder (default: %(default)s)")
    p.add_argument("--test-data", type=Path, default=DEFAULT_TEST_DATA,
                   help="folder with test/{NORMAL,PNEUMONIA}: the official test dev half every epoch is scored on (default: %(default)s)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections (default: all: {','.join(SECTIONS)})")
    p.add_argument("--limit", type=int, help="use only N train images (whole patients, classes in proportion)")
    p.add_argument("--epochs", type=int, help="cap training epochs of ours and the seed recipes (default: ours' default, seed 10)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the training comparison (default: %(default)s)")
    p.add_argument("--skip-seed-baseline", action="store_true", help="leave the seed baseline CNN's row out (shorter)")
    p.add_argument("--calls", type=int, default=50, help="timed prediction calls (default: %(default)s)")
    p.add_argument("--predict-models", default=",".join(names()), help="models to time predictions of (default: all)")
    p.add_argument("--scale-images", type=int, default=20000, help="images in the synthetic scale folder (default: %(default)s)")
    p.add_argument("--app", type=Path, default=common.PROJECT_ROOT / "app.py", help="the dashboard's entry script")
    p.add_argument("--page-timeout", type=float, default=120.0, help="seconds before AppTest gives up on a page")
    p.add_argument("--profile", action="store_true",
                   help="sample stacks during page visits and predictions: where the time goes, in the JSON")
    p.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="where speed.json/.md go (default: %(default)s)")
    p.add_argument("--work", type=Path, default=common.WORK_DIR, help="scratch folder (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--render", action="store_true", help="measure nothing: rewrite speed.md (and the docs) from speed.json")
    common.add_docs_flags(p)
    p.add_argument("--quiet", action="store_true", help="do not echo the training output")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--child-spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    bad_models = [m for m in args.predict_models.split(",") if m not in names()]
    if bad_models:
        p.error(f"--predict-models: unknown {bad_models}")
    return args


def measure(args, only: list[str], result: dict) -> bool:
    """Run the chosen sections into result["sections"], writing results after each; True if any failed."""
    from speed_data import Context, limited_copy
    from speed_report import render, section_flags

    from cxr_core.config import UserError

    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="speed-", dir=args.work))
    data = args.data.expanduser().resolve()
    try:
        if args.limit:
            data = limited_copy(data, args.limit, work / f"data-limit-{args.limit}", seed=0)
        ctx = Context(args, data, work)
    except UserError as error:  # a wrong --data: one line, like the CLI
        shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(f"error: {error}")
    ctx.previous = dict(result["sections"])
    failed = False
    try:
        for name in (n for n in SECTIONS if n in only):
            print(f"[{name}]", flush=True)
            started = time.perf_counter()
            module, func, _ = SECTIONS[name]
            try:
                section = function(module, func)(ctx)
            except Exception as error:  # keep the other sections' figures
                failed = True
                print(f"  FAILED: {type(error).__name__}: {error}", flush=True)
                section = {"error": f"{type(error).__name__}: {str(error)[:500]}"}
            section.update(date=common.now_iso(), seconds=time.perf_counter() - started,
                           flags_note=section_flags(name, args), machine=result["machine"], command=result["command"],
                           git=result["git"], data=result["data"])
            result["sections"][name] = section
            result["date"] = common.now_iso()
            common.write_results(args.out, "speed", result, "# Speed benchmark\n\n" + render(result))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return failed


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        function(*CHILDREN[args.child])(json.loads(args.child_spec))
        return 0
    from speed_report import TARGETS, render

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if not only or any(s not in SECTIONS for s in only):
        raise SystemExit(f"--only: choose from {', '.join(SECTIONS)}")
    previous = {}
    try:
        previous = json.loads((args.out / "speed.json").read_text())
    except (OSError, ValueError):
        pass
    failed = False
    if args.render:
        if not previous:
            raise SystemExit(f"--render: no {args.out / 'speed.json'} to render")
        result = previous
        common.write_results(args.out, "speed", result, "# Speed benchmark\n\n" + render(result))
    else:
        print(f"speed benchmark: sections {','.join(only)}", flush=True)
        print(f"  {common.command_line()}", flush=True)
        data = common.project_relative(args.data) + (f" (--limit {args.limit} train images)" if args.limit else "")
        result = {"benchmark": "speed", "command": common.command_line(), "date": common.now_iso(),
                  "git": common.git_state(), "machine": common.machine(), "data": data, "targets": TARGETS,
                  "sections": {k: v for k, v in previous.get("sections", {}).items() if k not in only and k in SECTIONS}}
        failed = measure(args, only, result)
    body = render(result, full=False)
    print("\n" + render(result))
    if args.update_docs:
        for path in common.update_docs({"speed": body}, args.docs_root):
            print(f"\nupdated {path}")
    print(f"\nwrote {args.out / 'speed.json'} and {args.out / 'speed.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed benchmark: ours against the study's way, measured in the same run.

    python benchmarks/speed.py                                   # every section on ../shared/data/chest_xray
    python benchmarks/speed.py --only training --update-docs     # 3 repeats of both full runs: hours on 2 cores
    python benchmarks/speed.py --only pipeline,predict,pages     # a few sections (others keep earlier results)
    python benchmarks/speed.py --render --update-docs            # rewrite speed.md and docs/performance.md from speed.json

Results go to benchmarks/results/speed.json and speed.md; sections not run keep their earlier results; each
records its commit, command, data and machine. A profile: `py-spy record -- python benchmarks/speed.py --only pages`.
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
from cxr_core import data as data_mod
from cxr_core import registry

# name: (module, function, what it measures). Run in this order.
SECTIONS = {
    "pipeline": ("speed_sections", "section_pipeline", "images/s over one epoch of the train split: cxr_core's "
                 "pipeline (cold and warm cache) vs image_dataset_from_directory at 180 px RGB"),
    "training": ("speed_training", "section_training", "the full default run against `train --recipe study`: wall "
                 "time, peak memory, and each run's kept model scored on the official test dev half"),
    "predict": ("speed_sections", "section_predict", "one 2000x2000 JPEG through inference.predict_image, and Grad-CAM"),
    "pages": ("speed_sections", "section_pages", "each page app.py names in st.Page, under AppTest with 10 runs stored"),
    "memory": ("speed_sections", "section_memory", "the dashboard's peak memory after a browser visited every page"),
}
# Child processes the sections start (a fresh interpreter each): name -> (module, function).
CHILDREN = {"pages": ("speed_sections", "pages_child")}


def function(module: str, name: str):
    # Imported on demand: a child or a section pays only for the modules it needs.
    return getattr(importlib.import_module(module), name)


def child_command(name: str, spec: dict) -> list[str]:
    """A child of this script (speed.py --child NAME): a fresh interpreter, as a person's run would be."""
    return [sys.executable, str(Path(__file__).resolve()), "--child", name, "--child-spec", json.dumps(spec)]


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


class Context:
    """One invocation: its arguments, data folder, scratch folder and the patient split `train` makes."""

    def __init__(self, args, data: Path, work: Path):
        s = registry.default_settings(registry.DEFAULT_MODEL)
        self.args, self.data, self.work, self.page_store = args, data, work, None
        self.split = data_mod.assign_splits(data_mod.scan_folder(data).manifest, val_fraction=s.val_fraction,
                                            test_fraction=s.test_fraction, seed=s.seed)


def parse_args(argv):
    from cxr_core.registry import names

    sections_help = "\n".join(f"  {name:<9} {what}" for name, (_, _, what) in SECTIONS.items())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + "\n\nsections:\n" + sections_help,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA, help="Kaggle-layout training folder (default: %(default)s)")
    p.add_argument("--test-data", type=Path, default=common.DEFAULT_TEST_DATA,
                   help="folder with test/{NORMAL,PNEUMONIA}: the official test dev half (default: %(default)s)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections (default: all: {','.join(SECTIONS)})")
    p.add_argument("--epochs", type=int, help="cap both recipes' epochs (default: each recipe's own)")
    p.add_argument("--image-size", type=int, help="train both recipes at this size (default: each recipe's own)")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats of the training comparison (default: %(default)s)")
    p.add_argument("--skip-seed-baseline", action="store_true", help=argparse.SUPPRESS)  # older results' commands
    p.add_argument("--calls", type=int, default=50, help="timed prediction calls (default: %(default)s)")
    p.add_argument("--predict-models", default=",".join(names()), help="models to time predictions of (default: all)")
    p.add_argument("--app", type=Path, default=common.PROJECT_ROOT / "app.py", help="the dashboard's entry script")
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
    if [m for m in args.predict_models.split(",") if m not in names()]:
        p.error(f"--predict-models: choose from {', '.join(names())}")
    return args


def measure(args, only: list[str], result: dict) -> bool:
    """Run the chosen sections into result["sections"], writing results after each; True if any failed."""
    from speed_report import render, section_flags

    from cxr_core.config import UserError

    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="speed-", dir=args.work))
    try:
        ctx = Context(args, args.data.expanduser().resolve(), work)
    except UserError as error:  # a wrong --data: one line, like the CLI
        shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(f"error: {error}") from None
    failed = False
    try:
        for name in (n for n in SECTIONS if n in only):
            print(f"[{name}]", flush=True)
            started = time.perf_counter()
            try:
                section = function(*SECTIONS[name][:2])(ctx)
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
    if args.render:
        result, failed = common.read_results(args.out, "speed"), False
    else:
        print(f"speed benchmark: sections {','.join(only)}\n  {common.command_line()}", flush=True)
        previous = json.loads((args.out / "speed.json").read_text()) if (args.out / "speed.json").is_file() else {}
        result = {"benchmark": "speed", "command": common.command_line(), "date": common.now_iso(), "git": common.git_state(),
                  "machine": common.machine(), "data": common.project_relative(args.data), "targets": TARGETS,
                  "sections": {k: v for k, v in previous.get("sections", {}).items() if k not in only and k in SECTIONS}}
        failed = measure(args, only, result)
    common.write_results(args.out, "speed", result, "# Speed benchmark\n\n" + render(result))
    print("\n" + render(result))
    if args.update_docs:
        for path in common.update_docs({"speed": render(result, full=False)}, args.docs_root):
            print(f"\nupdated {path}")
    print(f"\nwrote {args.out / 'speed.json'} and {args.out / 'speed.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Pages section: each page's render time under streamlit AppTest with 10 finished runs in the store.

The page list is read from app.py itself (its st.Page calls), not guessed from folder layouts.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
import time
from pathlib import Path

from speed_data import child_command, fresh
from speed_predict import profiled

import common
from cxr_core import registry


def _is_page_call(func) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "Page") or (isinstance(func, ast.Name) and func.id == "Page")


def discover_pages(app: Path) -> list[str]:
    """The page files app.py hands to st.Page, relative to app.py's folder, in the order written.

    Pages given as a function (st.Page(home)) are app.py's own code: they render as its default
    page, which is timed anyway. A file named here but missing stays in the list, so its visit fails
    in the table instead of disappearing from it.
    """
    if not app.is_file():
        return []
    calls = [node for node in ast.walk(ast.parse(app.read_text(), filename=str(app)))
             if isinstance(node, ast.Call) and _is_page_call(node.func) and node.args]
    calls.sort(key=lambda node: (node.lineno, node.col_offset))
    named = [str(Path(node.args[0].value)) for node in calls
             if isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)]
    return list(dict.fromkeys(named))


def make_page_store(ctx) -> Path:
    """10 finished runs: one tiny real run (1 epoch, 64 px) on the bench data, copied under new ids."""
    if ctx.page_store:
        return ctx.page_store
    store = fresh(ctx.work / "page-runs")
    env = common.cli_env(CXR_CACHE_DIR=ctx.work / "cache-pages")
    originals = []
    for model in (registry.DEFAULT_MODEL,):
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
    child = common.run_child(child_command("pages", spec),
                             env=common.cli_env(**page_env(ctx, store)), echo=False)
    if child["rc"] != 0:
        raise RuntimeError(" | ".join(child["lines"][-3:]))
    result = dict(json.loads(child["lines"][-1]), app=common.project_relative(app), runs_in_store=len(run_ids),
                  apptest_process_peak_rss_mib=child["peak_rss_mib"],
                  what="AppTest in a fresh child process: app.py run once (cold), then per page a new session: the "
                       "default page, switch_page + run (first visit, timed), run again (rerun, timed)")
    for row in result["pages"]:
        print(f"  {row['page']}: " + (row["error"] if "error" in row else
              f"{row['first_visit_s']:.2f} s first visit, {row['rerun_s']:.2f} s rerun"), flush=True)
    if not pages:
        result["note"] = "no page files found next to app.py; only app.py's default page was timed"
    return result

"""A classroom at once: N browser sessions on one dashboard server while a model trains.

    python benchmarks/classroom.py --sessions 30               # own server on the demo set
    python benchmarks/classroom.py --sessions 10 --out benchmarks/results --update-docs
    python benchmarks/classroom.py --render --update-docs      # measure nothing: rewrite from classroom.json

Each session (a Chromium context of its own, so its own Streamlit session) opens the default page, clicks
every other page app.py names in st.Page, in the order written, and uploads an X-ray on Predict. A step
runs from the click (or upload) until the page's heading is shown, Streamlit is idle and its images have
loaded. The benchmark starts its own server on the demo set with a private run store and cache, trains a
tiny run, queues a long one in the dashboard's own worker, measures that run's batches/s alone and then
while the class works, and stops everything at the end. psutil samples the server's process tree (with
its predictor, not the worker): its CPU seconds per page view is what a view costs the server, whatever
the browsers cost the machine. Then the projector's class view of a reading set that holds
--room-readers submitted readers (random answers): the server's CPU seconds per view of it (--room-views
browser sessions opening it) and per refresh (one session left open for --room-hold-s seconds, the view
redrawing itself every 5 s). The last line printed is JSON; --out also writes classroom.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from dashboard import IDLE, async_browser, serve

import common
from cxr_core import jobs, reads, registry
from cxr_core.config import CLASSES, demo_data_dir
from cxr_core.store import ACTIVE_STATES, RunStore

UPLOAD_PAGE, UPLOAD = "Predict", "Predict upload"


def training_step(store: RunStore, run_id: str) -> int | None:
    """Batches the background run has done so far (None until it trains)."""
    run = store.get(run_id)
    steps, batch = run.status.get("steps_per_epoch"), run.status.get("batch")
    if run.state != "running" or not steps or batch is None:
        return None
    return int(run.status.get("epoch") or 0) * int(steps) + int(batch)


def start_training(env: dict, work: Path, cleanup: ExitStack, alone_s: float) -> tuple[RunStore, str, float | None]:
    """A tiny finished run (for Compare and Predict), then a long one in the dashboard's worker, timed alone."""
    child = common.run_child([sys.executable, "-m", "cxr_core", "train", "--model", registry.DEFAULT_MODEL,
                              "--epochs", "1", "--image-size", "64", "--runs", str(work / "runs")], env=env, echo=False)
    if child["rc"] != 0:
        raise RuntimeError("tiny training run failed: " + " | ".join(child["lines"][-3:]))
    store, settings = RunStore(work / "runs"), registry.default_settings(registry.DEFAULT_MODEL)
    settings.epochs, settings.image_size, settings.batch_size, settings.early_stopping_patience = 200, 128, 16, 0
    run_id = jobs.submit(settings, demo_data_dir(), store, start=False)
    worker = jobs.spawn_worker(store)  # `python -m cxr_core worker`, as the Train page starts it
    cleanup.callback(stop_training, store, run_id, worker)
    deadline = time.time() + 300
    while not training_step(store, run_id):
        if time.time() > deadline or store.get(run_id).state not in ("queued", "running"):
            raise RuntimeError(f"background run {run_id} did not train: {store.get(run_id).status.get('error')}")
        time.sleep(1.0)
    first, started = training_step(store, run_id), time.time()
    time.sleep(alone_s)
    last = training_step(store, run_id)
    return store, run_id, None if last is None else (last - first) / (time.time() - started)


def stop_training(store: RunStore, run_id: str, worker) -> None:
    """Cancel the background run and wait (a minute at most) until it has ended; then end its worker,
    which would otherwise wait on for more jobs."""
    try:
        if store.get(run_id).state in ACTIVE_STATES:
            jobs.cancel(run_id, store)
        deadline = time.time() + 60
        while store.get(run_id).state in ACTIVE_STATES and time.time() < deadline:
            time.sleep(0.5)
    finally:  # cleanup goes on: the worker goes, whatever the run's files say
        worker.kill()
        worker.wait()


async def student(browser, number: int, url: str, pages: list[dict], xray: Path, delay: float, timeout_ms: int) -> dict:
    """One session's walk: {"session", "steps": {page title: seconds}, "error": str | None}."""
    await asyncio.sleep(delay)
    steps: dict[str, float] = {}
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    tab, step = await context.new_page(), pages[0]["title"]
    try:
        for i, page in enumerate(pages):
            step, started = page["title"], time.perf_counter()
            if i == 0:
                await tab.goto(url, timeout=timeout_ms)
            else:
                await tab.locator('[data-testid="stSidebarNavLink"]').filter(has_text=step).first.click(timeout=timeout_ms)
            if page["heading"]:
                await tab.get_by_role("heading", name=page["heading"], exact=True).first.wait_for(timeout=timeout_ms)
            await tab.wait_for_function(IDLE, polling=200, timeout=timeout_ms)
            steps[step] = time.perf_counter() - started
            if await tab.locator('[data-testid="stException"]').count():
                raise RuntimeError("the page shows an exception")
            if step == UPLOAD_PAGE and xray:
                step, started = UPLOAD, time.perf_counter()
                await tab.locator("input[type='file']").set_input_files(str(xray), timeout=timeout_ms)
                await tab.get_by_text("Grad-CAM: evidence for").first.wait_for(timeout=timeout_ms)
                await tab.wait_for_function(IDLE, polling=200, timeout=timeout_ms)
                steps[step] = time.perf_counter() - started
        return {"session": number, "steps": steps, "error": None}
    except Exception as error:  # a timeout or an exception shown: this student had a failure
        return {"session": number, "steps": steps, "error": f"{step}: {type(error).__name__}: {str(error)[:200]}"}
    finally:
        await context.close()


async def classroom(url: str, sessions: int, pages: list[dict], xray: Path | None, ramp_s: float, timeout_s: float):
    async with async_browser() as browser:
        walks = [student(browser, i, url, pages, xray, ramp_s * i / max(sessions - 1, 1), int(timeout_s * 1000))
                 for i in range(sessions)]
        return await asyncio.wait_for(asyncio.gather(*walks), timeout=timeout_s * (len(pages) + 2) + ramp_s + 60)


def reading_set_with_readers(store: RunStore, readers: int) -> str:
    """A reading set on the demo set with `readers` submitted readers answering at random; its id."""
    import random

    chosen = random.Random(0)
    reading_set = reads.create_set(demo_data_dir(), store, seed=7)
    for i in range(readers):
        answers = [{"answer": chosen.choice(CLASSES), "confidence": chosen.randint(1, 5)} for _ in reading_set["images"]]
        reads.submit(reading_set["id"], store, f"benchmark-{i}", f"reader {i}", answers)
    return reading_set["id"]


async def projector(url: str, hold_s: float, timeout_s: float) -> None:
    """One tab on the class view, left open `hold_s` seconds after it is shown."""
    async with async_browser() as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        tab = await context.new_page()
        await tab.goto(url, timeout=timeout_s * 1000)
        await tab.get_by_text("Readers").first.wait_for(timeout=timeout_s * 1000)
        await asyncio.sleep(hold_s)
        await context.close()


def room(url, server_pid: int, store: RunStore, args) -> dict:
    """The class view of a set with --room-readers readers: server CPU seconds per view and per refresh."""
    set_id = reading_set_with_readers(store, args.room_readers)
    link, page = f"{url}/read?view=class&set={set_id}", [{"title": "Read", "heading": "Read"}]
    # The teacher opens it first: readers who submitted through the server had their figures computed
    # then; these were written by this process, so the first view computes all of them.
    with common.TreeSampler(server_pid) as first:
        asyncio.run(classroom(link, 1, page, None, 0.0, args.timeout_s))
    with common.TreeSampler(server_pid) as opened:
        walks = asyncio.run(classroom(link, args.room_views, page, None, args.ramp_s, args.timeout_s))
    with common.TreeSampler(server_pid) as held:
        asyncio.run(projector(link, args.room_hold_s, args.timeout_s))
    refreshes = int(args.room_hold_s // 5)  # the class view's fragment redraws every 5 s
    views = sum(len(w["steps"]) for w in walks)
    return {"readers": args.room_readers, "first_view_cpu_s": round(first.cpu_s, 2),
            "views": views, "errors": sum(1 for w in walks if w["error"]),
            "cpu_s": round(opened.cpu_s, 2), "cpu_s_per_view": round(opened.cpu_s / views, 3) if views else None,
            "hold_s": args.room_hold_s, "refreshes": refreshes, "hold_cpu_s": round(held.cpu_s, 2),
            "cpu_s_per_refresh": round(held.cpu_s / refreshes, 3) if refreshes else None}


def summarize(walks: list[dict], cpu_s: float | None, cores: int) -> dict:
    """Latencies per step (the clients') and what a view costs the server, from the walks and its CPU seconds."""
    def pct(values, q):
        return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0], 2)

    times, per_step = [s for w in walks for s in w["steps"].values()], {}
    for name in dict.fromkeys(name for w in walks for name in w["steps"]):
        values = [w["steps"][name] for w in walks if name in w["steps"]]
        per_step[name] = {"p50_s": pct(values, 50), "p95_s": pct(values, 95), "max_s": round(max(values), 2),
                          "n": len(values)}
    views = len(times)
    per_view = cpu_s / views if cpu_s is not None and views else None
    return {"errors": sum(1 for w in walks if w["error"]), "p50_s": pct(times, 50) if times else None,
            "p95_s": pct(times, 95) if times else None, "per_step": per_step,
            "error_samples": [w["error"] for w in walks if w["error"]][:5], "page_views": views,
            "server_cpu_s_per_view": None if per_view is None else round(per_view, 3),
            # A core busy only with the server answers 1 / per_view views a second; the machine, cores times that.
            "capacity_views_per_s_per_core": round(1 / per_view, 2) if per_view else None,
            "capacity_views_per_s_machine": round(cores / per_view, 1) if per_view else None}


def render(result: dict) -> str:
    """The docs section: one line of provenance, then each figure, what it measured and whose it is."""
    def seconds(value) -> str:
        return "n/a" if value is None else f"{value:.2f} s"

    per_page = " / ".join(f"{name} {v['p50_s']:.1f} s" for name, v in (result.get("per_step") or {}).items())
    load, alone = result.get("training_under_load_batches_per_s"), result.get("training_alone_batches_per_s")
    training = "n/a" if None in (load, alone) else (
        f"{load:.2f} while the class worked vs {alone:.2f} alone just before ({load / alone:.0%} of its speed alone)")
    rows = [["sessions at once, errors", f"{result['sessions']}, {result['errors']}", "clients"],
            ["page time p50 / p95 (click to page shown and idle)",
             f"{seconds(result.get('p50_s'))} / {seconds(result.get('p95_s'))}", "clients (browser rendering included)"],
            ["per page p50", per_page or "n/a", "clients"],
            ["server CPU seconds per page view", seconds(result.get("server_cpu_s_per_view"))
             + f" ({result.get('server_cpu_s', 'n/a')} s for {result.get('page_views', 'n/a')} views)", "server"],
            ["implied capacity: page views per second per core",
             common.fmt(result.get("capacity_views_per_s_per_core"), 2), "server"],
            ["server process tree peak memory (with the predictor process)",
             "n/a" if result.get("peak_rss_mb") is None else f"{result['peak_rss_mb']:.0f} MB", "server"],
            ["background training (nice 10), batches/s", training, "training worker"],
            ["the machine's highest 1-minute load average during the walk (other work included)",
             common.fmt(result.get("loadavg_1min_max"), 1), "machine"]]
    side = result.get("room")
    if side:
        rows += [[f"class view of a reading set with {side['readers']} readers: server CPU seconds per view",
                  f"{seconds(side['cpu_s_per_view'])} ({side['cpu_s']} s for {side['views']} views, "
                  f"{side['errors']} errors; the teacher's first view, which computes every reader's figures "
                  f"once, {seconds(side['first_view_cpu_s'])})", "server"],
                 ["the same, per 5-second refresh of a projector's open tab",
                  f"{seconds(side['cpu_s_per_refresh'])} ({side['hold_cpu_s']} s over {side['hold_s']:.0f} s)", "server"]]
    return "\n".join([common.provenance(result), "", common.markdown_table(["figure", "measured", "whose"], rows)])


def publish(result: dict, args) -> None:
    """classroom.json/.md into --out, and with --update-docs the section of docs/performance.md."""
    body = render(result)
    print(body, file=sys.stderr)
    if args.out:
        common.write_results(args.out, "classroom", result, "# Classroom benchmark\n\n" + body)
    if args.update_docs:
        for path in common.update_docs({"classroom": body}, args.docs_root):
            print(f"updated {path}", file=sys.stderr)


def measure(args) -> dict:
    result = {"sessions": args.sessions, "git": common.git_state(), "date": common.now_iso(),
              "machine": common.machine_line(common.machine()), "command": common.command_line()}
    pages = sorted(common.app_pages(common.PROJECT_ROOT / "app.py"), key=lambda p: not p["default"])  # as the URL opens
    result["pages"] = [p["title"] for p in pages]
    with ExitStack() as cleanup:
        work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="classroom-")))
        env = {k: v for k, v in common.cli_env(CXR_RUNS_DIR=work / "runs", CXR_CACHE_DIR=work / "cache").items()
               if k not in ("CXR_DATA_DIR", "CXR_DATA_ROOTS", "CXR_TEACHER_KEY")}
        os.environ.update({k: env[k] for k in ("CXR_RUNS_DIR", "CXR_CACHE_DIR")})  # jobs.* in this process
        os.environ.pop("CXR_DATA_DIR", None)
        print("training a tiny run, then a long one in the background", file=sys.stderr, flush=True)
        store, run_id, result["training_alone_batches_per_s"] = start_training(env, work, cleanup, args.baseline_s)
        xray = sorted((demo_data_dir() / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
        url = cleanup.enter_context(serve(env=env))
        # The teacher's tab, which `streamlit run` opens, pays the server's first imports.
        teacher = asyncio.run(classroom(url, 1, pages[:1], None, 0.0, args.timeout_s))[0]
        result["teacher_home_s"] = round(teacher["steps"].get(pages[0]["title"], float("nan")), 2)
        print(f"{args.sessions} sessions on {url}: {', '.join(result['pages'])}", file=sys.stderr, flush=True)
        with common.TreeSampler(url.pid) as sampler:
            before, started = training_step(store, run_id), time.time()
            walks = asyncio.run(classroom(url, args.sessions, pages, xray, args.ramp_s, args.timeout_s))
            elapsed, after = time.time() - started, training_step(store, run_id)
        load = None if before is None or after is None else (after - before) / elapsed
        alone = result["training_alone_batches_per_s"]
        result.update(summarize(walks, sampler.cpu_s, common.machine()["cores"]), walks=walks, wall_s=round(elapsed, 1),
                      training_under_load_batches_per_s=load, training_share=round(load / alone, 2) if load and alone else None,
                      peak_rss_mb=round(sampler.peak_rss_mib, 1), server_cpu_s=round(sampler.cpu_s, 1),
                      loadavg_1min_max=round(sampler.load_max, 1))
        if args.room_readers:
            print(f"the class view of a set with {args.room_readers} readers", file=sys.stderr, flush=True)
            result["room"] = room(url, url.pid, store, args)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--ramp-s", type=float, default=3.0, help="sessions start spread over this many seconds")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="the longest one step may take")
    parser.add_argument("--baseline-s", type=float, default=20.0, help="training measured alone this long first")
    parser.add_argument("--room-readers", type=int, default=reads.MAX_READERS,
                        help="readers in the class view's reading set (default %(default)s, the most a set takes; 0: skip)")
    parser.add_argument("--room-views", type=int, default=5, help="sessions that open the class view")
    parser.add_argument("--room-hold-s", type=float, default=30.0, help="how long one tab stays on the class view")
    parser.add_argument("--out", type=Path, help="also write classroom.json and classroom.md into this folder")
    parser.add_argument("--render", action="store_true", help="measure nothing: report classroom.json (in --out)")
    common.add_docs_flags(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= 100:
        parser.error("--sessions must be between 1 and 100")
    result = common.read_results(args.out or common.RESULTS_DIR, "classroom") if args.render else measure(args)
    publish(result, args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

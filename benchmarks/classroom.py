"""A classroom at once: N browser sessions on one dashboard server while a model trains.

    python benchmarks/classroom.py --sessions 30               # own server on the demo set
    python benchmarks/classroom.py --sessions 10 --out benchmarks/results --update-docs
    python benchmarks/classroom.py --render --update-docs      # measure nothing: rewrite from classroom.json
    python benchmarks/classroom.py --sessions 5 --url http://127.0.0.1:8501 --xray some.jpeg

Each session (a Chromium context of its own, so its own Streamlit session)
opens Home, then clicks Dataset, Compare and Predict in the sidebar and
uploads an X-ray on Predict, as a student would. A step's time runs from the
navigation (or the upload) until the page's main content is on screen and
Streamlit is idle (no script running, no spinner or skeleton left).

Without --url the benchmark starts its own `streamlit run app.py` on 127.0.0.1
over the demo data set, with a private run store and cache in a temp folder;
it trains one tiny run first (`python -m cxr_core train`), then queues a long
run through the dashboard's own worker so that a model trains during the
whole test, and stops everything at the end. The server's process tree (the
server and what it starts) is sampled for resident memory; the training
worker is not part of it. Its CPU seconds over the students' walks, divided by
their page views (uploads included), is `server_cpu_s_per_view`: what one view
costs the server, whatever the browsers cost the machine. The last line printed
is a JSON object; --out also writes it to classroom.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import classroom_report

import common  # benchmarks/common.py
from cxr_core import jobs, registry
from cxr_core.registry import default_settings
from cxr_core.store import RunStore

# Heading that proves each page's own script has rendered, keyed by the sidebar label.
PAGES = {"Home": "Chest X-ray pneumonia study", "Dataset": "Dataset explorer", "Compare": "Compare runs",
         "Predict": "Predict"}
IDLE = ("() => document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state')"
        " === 'notRunning' && !document.querySelector('[data-testid=\"stSkeleton\"]')"
        " && !document.querySelector('[data-testid=\"stSpinner\"]')")


# ---------------------------------------------------------------- the server and its training


def train_tiny(env: dict, runs: Path) -> str:
    child = common.run_child([sys.executable, "-m", "cxr_core", "train", "--model", registry.DEFAULT_MODEL,
                              "--epochs", "1", "--image-size", "64", "--runs", str(runs)], env=env, echo=False)
    if child["rc"] != 0:
        raise RuntimeError("tiny training run failed: " + " | ".join(child["lines"][-3:]))
    return child["lines"][-1].strip()


def queue_long_run(store: RunStore, data_dir: Path) -> tuple[str, subprocess.Popen]:
    """A run that keeps training through the test (no early stop), trained by the dashboard's own
    background worker (`python -m cxr_core worker`, as the Train page starts it); (run id, worker)."""
    settings = default_settings(registry.DEFAULT_MODEL)
    settings.epochs, settings.image_size, settings.batch_size = 200, 128, 16
    settings.early_stopping_patience = 0
    run_id = jobs.submit(settings, data_dir, store, start=False)
    return run_id, jobs.spawn_worker(store)


def training_step(store: RunStore, run_id: str) -> int | None:
    """Batches done so far by the run (None until it trains)."""
    run = store.get(run_id)
    steps, batch = run.status.get("steps_per_epoch"), run.status.get("batch")
    if run.state != "running" or not steps or batch is None:
        return None
    return int(run.status.get("epoch") or 0) * int(steps) + int(batch)


def wait_training(store: RunStore, run_id: str, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (training_step(store, run_id) or 0) > 0:
            return
        if store.get(run_id).state not in ("queued", "running"):
            raise RuntimeError(f"background run {run_id} ended: {store.get(run_id).status.get('error')}")
        time.sleep(1.0)
    raise RuntimeError(f"background run {run_id} did not start training within {timeout:.0f}s")


def training_rate(store: RunStore, run_id: str, seconds: float) -> float | None:
    """Batches per second over `seconds` of wall time."""
    first, started = training_step(store, run_id), time.time()
    time.sleep(seconds)
    last = training_step(store, run_id)
    return None if first is None or last is None else (last - first) / (time.time() - started)


def tree_usage(root: int) -> tuple[float, float]:
    """(Resident MiB, CPU seconds so far) of `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, cpu, todo = 0.0, 0.0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total, cpu


class RssSampler(threading.Thread):
    """Peak memory of the server's tree, its CPU time, and the machine's load (others share it)."""

    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.stop = pid, interval, 0.0, threading.Event()
        self.cpu_start, self.cpu, self.load_max = tree_usage(pid)[1], 0.0, 0.0

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            rss, cpu = tree_usage(self.pid)
            self.peak, self.cpu = max(self.peak, rss), cpu - self.cpu_start
            self.load_max = max(self.load_max, os.getloadavg()[0])


def stop_process_group(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


# ---------------------------------------------------------------- the students


async def settle(tab, heading: str, timeout_ms: int) -> None:
    await tab.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=timeout_ms)
    await tab.wait_for_function(IDLE, polling=200, timeout=timeout_ms)


async def student(browser, number: int, url: str, xray: Path, delay: float, timeout_ms: int,
                  walk: tuple) -> dict:
    """One session's walk through the dashboard: {"steps": {name: seconds}, "error": str | None}."""
    await asyncio.sleep(delay)
    steps: dict[str, float] = {}
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    step = "Home"
    try:
        tab = await context.new_page()
        started = time.perf_counter()
        await tab.goto(url, timeout=timeout_ms)
        await settle(tab, PAGES["Home"], timeout_ms)
        steps["Home"] = time.perf_counter() - started
        for step in [name for name in ("Dataset", "Compare", "Predict") if name in walk]:
            link = tab.locator('[data-testid="stSidebarNavLink"]').filter(has_text=step)
            started = time.perf_counter()
            await link.first.click(timeout=timeout_ms)
            await settle(tab, PAGES[step], timeout_ms)
            if step == "Dataset":  # the gallery's images arrive after the script run ends
                await tab.locator('[data-testid="stImage"]').nth(11).wait_for(timeout=timeout_ms)
            steps[step] = time.perf_counter() - started
            if await tab.locator('[data-testid="stException"]').count():
                raise RuntimeError("the page shows an exception")
        step = "Predict upload"
        if step not in walk:
            return {"session": number, "steps": steps, "error": None}
        started = time.perf_counter()
        await tab.locator("input[type='file']").set_input_files(str(xray), timeout=timeout_ms)
        await tab.get_by_text("Grad-CAM: evidence for").first.wait_for(timeout=timeout_ms)
        await tab.wait_for_function(IDLE, polling=200, timeout=timeout_ms)
        steps[step] = time.perf_counter() - started
        if await tab.locator('[data-testid="stException"]').count():
            raise RuntimeError("the page shows an exception")
        return {"session": number, "steps": steps, "error": None}
    except Exception as error:  # a timeout or an exception shown: this student had a failure
        return {"session": number, "steps": steps, "error": f"{step}: {type(error).__name__}: {str(error)[:200]}"}
    finally:
        await context.close()


async def classroom(url: str, sessions: int, xray: Path, ramp_s: float, timeout_s: float,
                    steps: tuple = ("Home", "Dataset", "Compare", "Predict", "Predict upload")) -> list[dict]:
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("no chromium on the PATH (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=common.BROWSER_ARGS)
        try:
            delays = [ramp_s * i / max(sessions - 1, 1) for i in range(sessions)]
            walks = [student(browser, i, url, xray, delays[i], int(timeout_s * 1000), steps) for i in range(sessions)]
            return await asyncio.wait_for(asyncio.gather(*walks), timeout=timeout_s * 6 + ramp_s + 60)
        finally:
            await browser.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def summarize(walks: list[dict]) -> dict:
    times = [s for walk in walks for s in walk["steps"].values()]
    per_step = {}
    for name in [*PAGES, "Predict upload"]:
        values = [walk["steps"][name] for walk in walks if name in walk["steps"]]
        if values:
            per_step[name] = {"p50_s": round(percentile(values, 50), 2), "p95_s": round(percentile(values, 95), 2),
                              "max_s": round(max(values), 2), "n": len(values)}
    return {"errors": sum(1 for walk in walks if walk["error"]),
            "p50_s": round(percentile(times, 50), 2) if times else None,
            "p95_s": round(percentile(times, 95), 2) if times else None,
            "per_step": per_step, "error_samples": [w["error"] for w in walks if w["error"]][:5]}


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--url", help="an already running dashboard (then --xray names the file to upload)")
    parser.add_argument("--xray", type=Path, help="the X-ray each session uploads (default: one of the demo set)")
    parser.add_argument("--ramp-s", type=float, default=3.0, help="sessions start spread over this many seconds")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="the longest one step may take")
    parser.add_argument("--baseline-s", type=float, default=20.0, help="training measured alone this long first")
    parser.add_argument("--no-teacher", dest="teacher", action="store_false",
                        help="skip the teacher's visit to Home before the students (`streamlit run` opens it)")
    parser.add_argument("--out", type=Path, help="also write classroom.json and classroom.md into this folder")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: print (and with --update-docs write) the report of classroom.json")
    common.add_docs_flags(parser)
    args = parser.parse_args(argv)
    if args.render:
        return classroom_report.render_stored(args)
    if not 1 <= args.sessions <= 100:
        parser.error("--sessions must be between 1 and 100")
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        parser.error("--url must be a dashboard on this machine (http://127.0.0.1:PORT)")

    machine = common.machine()
    result = {"sessions": args.sessions, "commit": git_commit(), "git": common.git_state(), "date": common.now_iso(),
              "machine": common.machine_line(machine), "command": common.command_line()}
    with ExitStack() as cleanup:
        if args.url:
            url, xray, server_pid, store, run_id = args.url.rstrip("/"), args.xray, None, None, None
            if xray is None:
                parser.error("--url needs --xray FILE")
        else:
            work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="classroom-")))
            env = common.cli_env(CXR_RUNS_DIR=work / "runs", CXR_CACHE_DIR=work / "cache")
            env.pop("CXR_DATA_DIR", None)
            env.pop("CXR_DATA_ROOTS", None)
            os.environ.update({k: env[k] for k in ("CXR_RUNS_DIR", "CXR_CACHE_DIR")})
            os.environ.pop("CXR_DATA_DIR", None)
            print("training a tiny run for Compare and Predict", file=sys.stderr, flush=True)
            train_tiny(env, work / "runs")
            from cxr_core.config import demo_data_dir

            data_dir = demo_data_dir()
            xray = args.xray or sorted((data_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
            store = RunStore(work / "runs")
            run_id, worker = queue_long_run(store, data_dir)
            cleanup.callback(stop_training, store, run_id, worker)
            port = common.free_port()
            log = cleanup.enter_context(open(work / "streamlit.log", "wb"))
            server = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                 "--server.address", "127.0.0.1", "--server.headless", "true",
                 "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                cwd=common.PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            cleanup.callback(stop_process_group, server)
            url, server_pid = f"http://127.0.0.1:{port}", server.pid
            common.wait_healthy(url, server)
            print("waiting for the background run to train", file=sys.stderr, flush=True)
            wait_training(store, run_id)
            result["training_alone_batches_per_s"] = training_rate(store, run_id, args.baseline_s)

        if args.teacher:  # the teacher's tab, which `streamlit run` opens, pays the server's first imports
            teacher = asyncio.run(classroom(url, 1, xray, 0.0, args.timeout_s, steps=("Home",)))[0]
            result["teacher_home_s"] = round(teacher["steps"].get("Home", float("nan")), 2)
        sampler = RssSampler(server_pid) if server_pid else None
        if sampler:
            sampler.start()
            cleanup.callback(sampler.stop.set)
        print(f"{args.sessions} sessions on {url}", file=sys.stderr, flush=True)
        before, started = (training_step(store, run_id) if store else None), time.time()
        walks = asyncio.run(classroom(url, args.sessions, xray, args.ramp_s, args.timeout_s))
        elapsed = time.time() - started
        result.update(summarize(walks), wall_s=round(elapsed, 1))
        if store:
            after = training_step(store, run_id)
            rate = None if before is None or after is None else (after - before) / elapsed
            result["training_under_load_batches_per_s"] = rate
            alone = result.get("training_alone_batches_per_s")
            result["training_share"] = round(rate / alone, 2) if rate and alone else None
        result["peak_rss_mb"] = round(sampler.peak, 1) if sampler else None
        if sampler:
            result["server_cpu_s"], result["loadavg_1min_max"] = round(sampler.cpu, 1), round(sampler.load_max, 1)
        result.update(classroom_report.server_cost(result, walks, sampler.cpu if sampler else None, machine["cores"]))
    classroom_report.publish(result, args)
    print(json.dumps(result), flush=True)
    return 0


def stop_training(store: RunStore, run_id: str, worker: subprocess.Popen) -> None:
    """Cancel the background run; a worker that has not ended within a minute is killed."""
    try:
        if store.get(run_id).state in ("queued", "running"):
            jobs.cancel(run_id, store)
        worker.wait(timeout=60)
    except Exception as error:  # cleanup must go on: the worker goes, whatever the run's files say
        print(f"stopping run {run_id}: {type(error).__name__}: {error}; killing its worker", file=sys.stderr)
        stop_process_group(worker)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=common.PROJECT_ROOT, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=common.PROJECT_ROOT, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


if __name__ == "__main__":
    sys.exit(main())

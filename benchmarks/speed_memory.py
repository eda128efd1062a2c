"""Memory section: peak resident memory of a training run and of the dashboard after every page.

The dashboard is `streamlit run` driven by Playwright on Debian's Chromium (AppTest where there is
no browser). Each child's peak is the kernel's high-water mark (wait4 ru_maxrss or /proc VmHWM).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from speed_data import child_command
from speed_ours import train_product
from speed_pages import discover_pages, make_page_store, page_env

import common


def proc_memory(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def wait_idle(page, timeout_ms: int = 120_000) -> None:
    page.wait_for_timeout(300)  # let the click's rerun start before asking whether it finished
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)


def dashboard_memory_browser(ctx, store: Path) -> dict:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    app = ctx.args.app.resolve()
    port = common.free_port()
    log = open(ctx.work / "streamlit.log", "w")
    env = common.cli_env(**page_env(ctx, store))
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
                               "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                              cwd=app.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    visited = []
    try:
        url = f"http://127.0.0.1:{port}"
        common.wait_healthy(url, server, timeout=60, log=ctx.work / "streamlit.log")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=common.BROWSER_ARGS)
            page = browser.new_page()
            started = time.perf_counter()
            page.goto(url)
            wait_idle(page)
            visited.append({"page": "(landing)", "seconds": time.perf_counter() - started})
            links = page.locator('[data-testid="stSidebarNavLink"]')
            for i in range(links.count()):
                name = links.nth(i).inner_text().strip().splitlines()[-1]  # the label, after the icon's name
                started = time.perf_counter()
                links.nth(i).click()
                wait_idle(page)
                visited.append({"page": name, "seconds": time.perf_counter() - started})
            browser.close()
        memory = proc_memory(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    return {"method": "`streamlit run app.py` driven by Playwright on Debian's Chromium; /proc VmHWM of the server",
            "peak_rss_mib": memory["VmHWM"], "rss_at_end_mib": memory["VmRSS"], "visited": visited}


def apptest_visit_child(spec: dict) -> None:
    from streamlit.testing.v1 import AppTest

    for page in [None] + spec["pages"]:
        at = AppTest.from_file(spec["app"], default_timeout=spec["timeout"]).run()
        if page:
            at.switch_page(page).run()


def dashboard_memory_apptest(ctx, store: Path) -> dict:
    app = ctx.args.app.resolve()
    spec = {"app": str(app), "pages": discover_pages(app), "timeout": ctx.args.page_timeout}
    child = common.run_child(child_command("apptest-visit", spec),
                             env=common.cli_env(**page_env(ctx, store)), echo=False)
    if child["rc"] != 0:
        raise RuntimeError(" | ".join(child["lines"][-3:]))
    return {"method": "AppTest visiting every page in a child process; wait4 ru_maxrss",
            "peak_rss_mib": child["peak_rss_mib"], "visited": spec["pages"]}


def section_memory(ctx) -> dict:
    result = {}
    if ctx.training_peak:
        result["training"] = dict(ctx.training_peak, source="the training section's regularized_cnn runs (the "
                                  "largest peak; their per-epoch dev scoring included)")
    else:
        print("  training run (regularized_cnn defaults"
              + (f", --epochs {ctx.args.epochs}" if ctx.args.epochs else "") + ")", flush=True)
        ours = train_product(ctx, ctx.args.epochs, "memory", dev=None)
        result["training"] = {"peak_rss_mib": ours["peak_rss_mib"], "epochs": ours["epochs_run"],
                              "limit": ctx.args.limit, "source": "`python -m cxr_core train` child; wait4 ru_maxrss"}
    print(f"  training peak {result['training']['peak_rss_mib']:.0f} MiB", flush=True)
    if ctx.args.app.resolve().is_file():
        store = make_page_store(ctx)
        chromium = shutil.which("chromium") or (Path("/usr/bin/chromium").is_file() and "/usr/bin/chromium")
        try:
            if not chromium:
                raise RuntimeError("no chromium on this machine")
            result["dashboard"] = dashboard_memory_browser(ctx, store)
        except Exception as error:
            print(f"  browser method failed ({type(error).__name__}: {str(error)[:200]}); using AppTest", flush=True)
            result["dashboard"] = dict(dashboard_memory_apptest(ctx, store),
                                       browser_error=f"{type(error).__name__}: {str(error)[:300]}")
        print(f"  dashboard peak {result['dashboard']['peak_rss_mib']:.0f} MiB", flush=True)
    return result

"""Start the dashboard and Chromium: the one starter the browser tests and the benchmarks use.

    from dashboard import IDLE, browser, serve   # benchmarks/ is on the path (pytest.ini; python benchmarks/x.py)

    with serve(env={**os.environ, "CXR_RUNS_DIR": runs}) as url, browser() as chromium:
        tab = chromium.new_page()
        tab.goto(url)                            # url.pid: the server's pid (the root of its process tree)
        tab.wait_for_function(IDLE)              # the script run is over, images loaded

serve(env=None, port=None, app=None, log=None, options=()): `streamlit run app.py` headless on 127.0.0.1 (a free
port unless given), in its own process group, `env` its whole environment (default os.environ), `options` extra
flags; yields the URL once /_stcore/health answers, then stops the group. browser() / async_browser(): a
Playwright Browser (sync / async API) on Debian's Chromium (CHROMIUM, None where absent), closed at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import PROJECT_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium as root in a container: no sandbox, no GPU, nothing fetched in the background.
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# A page is settled when its script run is over, no skeleton or spinner is left and its images have loaded.
IDLE = ("() => document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state')"
        " === 'notRunning' && !document.querySelector('[data-testid=\"stSkeleton\"], [data-testid=\"stSpinner\"]')"
        " && [...document.querySelectorAll('[data-testid=\"stMain\"] img')].every(i => i.complete)")


# The server is on loopback: no proxy, whatever the environment says. urlopen's shared opener keeps the
# proxies of the moment it was first used, which a test that simulates being offline may have set.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Url(str):
    pid: int  # the server's process id


def _wait_healthy(url: str, server: subprocess.Popen, log, timeout: float) -> None:
    def tail() -> str:
        log.flush()
        log.seek(0)
        return log.read()[-3000:].decode(errors="replace")

    deadline, last = time.time() + timeout, "no answer yet"
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with {server.returncode}:\n{tail()}")
        try:
            with LOOPBACK.open(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except OSError as error:
            last = f"{type(error).__name__}: {error}"
            time.sleep(0.5)
    raise RuntimeError(f"streamlit did not answer within {timeout:.0f}s (last: {last}):\n{tail()}")


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's group (the predictor child goes with it), SIGKILL after 15 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if server.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=15)


@contextlib.contextmanager
def serve(env: dict | None = None, port: int | None = None, app: Path | None = None, log: Path | None = None,
          options: tuple = (), timeout: float = 120.0):
    """`streamlit run app.py` until the block ends; yields its Url (see the module's docstring)."""
    app = Path(app or PROJECT_ROOT / "app.py").resolve()
    if port is None:
        with socket.socket() as sock:  # a free port: the kernel's pick, released for streamlit to take
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", *options]
    with open(log, "w+b") if log else tempfile.TemporaryFile() as out:
        server = subprocess.Popen(command, cwd=app.parent, env=env or dict(os.environ), stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = Url(f"http://127.0.0.1:{port}")
            url.pid = server.pid
            _wait_healthy(url, server, out, timeout)
            yield url
        finally:
            _stop(server)


def _launch_options() -> dict:
    if CHROMIUM is None:
        raise RuntimeError("no chromium on the PATH (apt-get install chromium)")
    return {"executable_path": CHROMIUM, "args": BROWSER_ARGS}


@contextlib.contextmanager
def browser():
    """A sync-API playwright Browser on Debian's Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(**_launch_options())
        try:
            yield chromium
        finally:
            chromium.close()


@contextlib.asynccontextmanager
async def async_browser():
    """The same Chromium through Playwright's async API (many sessions from one thread)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(**_launch_options())
        try:
            yield chromium
        finally:
            await chromium.close()

"""Predictions with Grad-CAM in a process of their own, beside the dashboard's server.

    predictor = Predictor()                        # starts the process (it imports TensorFlow)
    result = predictor.analyse(run_id, runs_root, upload_bytes, "xray.jpeg")
    predictor.close()

Why a process: TensorFlow's import takes seconds and holds the interpreter
lock for long stretches. In the server it made the Predict page's first visit
slow, and in a server thread it starved every other session (their images
arrived seconds late). Here the server stays free of TensorFlow; it sends the
upload's bytes over a local socket (a Unix socket, authenticated with a
random key that only the server knows) and gets back
`inference.analyse()`'s dict, heat map included. The process ends with the
server: it watches its parent and exits when the parent is gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener

from . import images
from .config import PROJECT_ROOT, UserError

FAMILY = "AF_UNIX" if os.name == "posix" else "AF_PIPE"
# Errors a person can act on travel by name and come back as the same type.
_ERRORS = {"ImageDecodeError": images.ImageDecodeError, "UserError": UserError}


class Predictor:
    """The server's handle on one predictor process; thread-safe (one connection per request)."""

    def __init__(self, start_timeout: float = 180.0, log_path: str | None = None):
        self.start_timeout = start_timeout
        self.log_path = log_path
        self._lock = threading.Lock()
        self._folder = tempfile.mkdtemp(prefix="cxr-predictor-")
        self._address = (os.path.join(self._folder, "predictor.sock") if FAMILY == "AF_UNIX"
                         else rf"\\.\pipe\cxr-predictor-{os.getpid()}-{os.urandom(4).hex()}")
        self._authkey = os.urandom(32)
        self.process: subprocess.Popen | None = None
        self._start()

    def _start(self) -> None:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen([sys.executable, "-m", "cxr_core.predictor", self._address],
                                            stdin=subprocess.PIPE, stdout=log, stderr=log, cwd=PROJECT_ROOT)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        # Through a pipe, not argv or the environment, which other users of the machine can read.
        self.process.stdin.write(self._authkey.hex().encode() + b"\n")
        self.process.stdin.close()

    def _connect(self):
        """A connection to the process, restarting it once if it died; waits while it starts."""
        deadline = time.monotonic() + self.start_timeout
        restarted = False
        while True:
            try:
                return Client(self._address, family=FAMILY, authkey=self._authkey)
            except (FileNotFoundError, ConnectionRefusedError):
                pass  # not listening yet: it imports TensorFlow first
            with self._lock:
                if self.process.poll() is not None:
                    if restarted:
                        raise RuntimeError(f"the prediction process exited with {self.process.returncode} "
                                           "twice; see the server's log")
                    self._start()
                    restarted = True
            if time.monotonic() > deadline:
                raise RuntimeError(f"the prediction process did not start within {self.start_timeout:.0f}s")
            time.sleep(0.1)

    def analyse(self, run_id: str, runs_root: str, content: bytes, name: str, timeout: float = 300.0) -> dict:
        """inference.analyse() of an upload by one run, computed in the predictor process.

        Raises ImageDecodeError (a bad file) or UserError (an unusable run) as they were raised there."""
        return self._ask(("analyse", run_id, str(runs_root), content, name), timeout)

    def sanity_maps(self, run_id: str, runs_root: str, path: str, label: str, timeout: float = 300.0) -> dict:
        """lesson.sanity_maps() of one image file: Grad-CAM of the run's model and of a random-weight copy."""
        return self._ask(("sanity", run_id, str(runs_root), str(path), label), timeout)

    def _ask(self, request: tuple, timeout: float):
        with self._connect() as connection:
            connection.send(request)
            if not connection.poll(timeout):
                raise RuntimeError(f"no answer from the prediction process within {timeout:.0f}s")
            status, payload = connection.recv()
        if status == "ok":
            return payload
        kind, message = payload
        raise _ERRORS.get(kind, RuntimeError)(message)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self._folder, ignore_errors=True)


# ---------------------------------------------------------------- the process itself


def _exit_tidily(address: str) -> None:
    """Remove the socket's folder (a server that died could not) and end the process."""
    if FAMILY == "AF_UNIX" and os.path.basename(os.path.dirname(address)).startswith("cxr-predictor-"):
        shutil.rmtree(os.path.dirname(address), ignore_errors=True)
    os._exit(0)


def _exit_with_parent(parent: int, address: str) -> None:
    """Exit when the server that started us is gone (its children are re-parented)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    _exit_tidily(address)


def _loaded(cache: OrderedDict, run_id: str, runs_root: str):
    """The run's model, loaded once; a retrained model (new file mtime) replaces the old."""
    from .inference import load_run, model_key
    from .store import RunStore

    store = RunStore(runs_root)
    key = (runs_root, model_key(run_id, store))
    if key not in cache:
        cache[key] = load_run(run_id, store)
        while len(cache) > 6:  # like the dashboard's own model cache: a few models, not every run ever seen
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


def _answer(cache: OrderedDict, request) -> tuple:
    from . import images
    from .inference import analyse

    try:
        verb, run_id, runs_root, *rest = request
        loaded = _loaded(cache, run_id, runs_root)
        if verb == "analyse":
            content, name = rest
            return "ok", analyse(loaded, content, name)
        if verb == "sanity":
            from . import explain, lesson

            path, label = rest
            key = ("randomized", runs_root, run_id, id(loaded.model))
            if key not in cache:  # one random copy per loaded model: the same map every time it is asked
                cache[key] = explain.randomized_copy(loaded.model)
            pixels = images.load_for_model(path, loaded.image_size)
            return "ok", lesson.sanity_maps(loaded.model, cache[key], pixels, label)
        raise ValueError(f"unknown request {verb!r}")
    except Exception as error:  # any failure goes back to the page, and the process serves on
        kind = type(error).__name__ if type(error).__name__ in _ERRORS else "RuntimeError"
        message = str(error) if kind in _ERRORS else f"{type(error).__name__}: {error}"
        return "error", (kind, message[:2000])


def serve(address: str, authkey: bytes) -> None:
    """Answer requests one at a time (the cores are few; a queue is fairer than a fight)."""
    threading.Thread(target=_exit_with_parent, args=(os.getppid(), address), daemon=True).start()
    # A stopped server's process group gets SIGTERM too: tidy up on it rather than die mid-way.
    signal.signal(signal.SIGTERM, lambda signum, frame: _exit_tidily(address))
    import keras  # noqa: F401  the slow import, before listening: a client that connects finds it ready

    if FAMILY == "AF_UNIX" and os.path.exists(address):
        os.unlink(address)  # left by a predecessor that was killed; only our server knows this folder
    cache: OrderedDict = OrderedDict()
    with Listener(address, family=FAMILY, backlog=64, authkey=authkey) as listener:
        while True:
            try:
                connection = listener.accept()
            except (OSError, EOFError, AuthenticationError):  # say, a client without the key
                continue
            with connection:
                try:
                    if connection.poll(30):
                        connection.send(_answer(cache, connection.recv()))
                except (OSError, EOFError):
                    pass  # the page went away (a rerun, a closed tab); nothing to answer


if __name__ == "__main__":
    serve(sys.argv[1], bytes.fromhex(sys.stdin.readline().strip()))

"""Start, queue, watch and stop training jobs, each in its own process.

One worker process at a time trains the queued runs, oldest first; it holds
an exclusive `flock` on RUNS/.worker.lock for its whole life. The kernel
releases that lock when the process dies, even on SIGKILL, so a crashed
worker never blocks the queue, and two workers can never train at once (the
machine has few cores; two jobs would each take twice as long).

    submit(settings, data_dir)    queue a run and make sure a worker is running
    submit_evaluation(run_id, data_dir)
                                  queue scoring a finished run on another labelled folder
    cancel(run_id)                a queued run is dropped; a running one gets SIGTERM

At most config.max_queued() runs and scorings wait at once (CXR_MAX_QUEUED, default 8): one
worker trains them in turn, so a longer queue holds the machine for hours. A run that the
submitting process trains itself at once (`python -m cxr_core train`, which holds the worker
lock) never waits, and is not counted against that bound.

Evaluation requests wait in RUNS/.evaluations/ as one JSON file each (queued,
running, done or failed); the worker takes them after the queued training
runs, so scoring never competes with training for the cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .config import PROJECT_ROOT, TrainSettings, UserError, max_queued, worker_niceness
from .locks import acquire, busy, queue_lock, trains_here, worker_lock, worker_running  # noqa: F401  worker_lock: the CLI's
from .processes import pid_alive, process_record
from .quiet import import_tensorflow
from .store import ACTIVE_STATES, RunState, RunStore, atomic_write_json, read_json

EVALUATIONS = ".evaluations"
def queued(store: RunStore) -> list:
    return sorted((r for r in store.list() if r.state == RunState.QUEUED), key=lambda r: r.created)


def check_room(store: RunStore, requests: int = 1) -> None:
    """Raise UserError unless `requests` more runs or scorings may wait for the worker."""
    limit = max_queued()
    waiting = len(queued(store)) + len(queued_evaluations(store))
    if waiting + requests > limit:
        more = "" if requests == 1 else f" for {requests} more"
        raise UserError(f"the queue is full{more}: {waiting} runs and scorings already wait for the worker "
                        f"(at most {limit}, set by CXR_MAX_QUEUED); wait for some to finish or remove a queued run")


def run_one(run_id: str, store: RunStore, echo=print) -> str:
    """Train one run in this process (the caller holds the worker lock); returns its final state.
    A queued ensemble (cxr_core.ensemble) trains its members one after another, then combines them."""
    if store.get(run_id).recipe == "ensemble":
        from .ensemble import run_job as run_ensemble

        return run_ensemble(run_id, store, echo)
    from .train import run_job

    return run_job(run_id, store, echo)


def submit_evaluation(run_id: str, data_dir, store: RunStore | None = None, *, split: str = "test",
                      start: bool = True, occlusion: str | None = None) -> str:
    """Queue scoring run `run_id` on the labelled folder `data_dir` (the run's own folder: its own
    split), with the lung box occluded or kept alone when `occlusion` is given; returns the request id.

    An identical request still waiting or running is not queued twice; a new one is refused
    (UserError) when the queue is full (check_room).
    """
    from . import data as data_mod

    store = store or RunStore()
    run = store.get(run_id)
    if run.state != RunState.DONE:
        raise UserError(f"run {run_id} is {run.state}; only finished runs can be evaluated")
    root = str(data_mod.resolve_root(data_dir, require_train=False))
    with queue_lock(store):
        for request in evaluation_requests(store):
            if (request["run"], request["data_dir"], request["split"], request.get("occlusion")) == \
                    (run_id, root, split, occlusion) and request["state"] in ACTIVE_STATES:
                return request["id"]
        check_room(store)
        folder = store.root / EVALUATIONS
        folder.mkdir(parents=True, exist_ok=True)
        request_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
        atomic_write_json(folder / f"{request_id}.json", {"id": request_id, "run": run_id, "data_dir": root,
                                                          "split": split, "occlusion": occlusion,
                                                          "state": RunState.QUEUED, "created": time.time()})
    if start:
        spawn_worker(store)
    return request_id


def evaluation_requests(store: RunStore) -> list[dict]:
    """Every evaluation request, oldest first; a running one whose worker died reads 'interrupted'."""
    folder = store.root / EVALUATIONS
    requests = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            request = read_json(path)
        except (OSError, ValueError):
            continue
        if not isinstance(request, dict) or "run" not in request:
            continue
        if request.get("state") == RunState.RUNNING and not pid_alive(request.get("pid"), request.get("pid_start")):
            request["state"] = RunState.INTERRUPTED
        requests.append(request)
    return sorted(requests, key=lambda r: r.get("created", 0))


def _update_request(store: RunStore, request: dict, **fields) -> None:
    request.update(fields, updated=time.time())
    atomic_write_json(store.root / EVALUATIONS / f"{request['id']}.json", request)


def queued_evaluations(store: RunStore) -> list[dict]:
    return [r for r in evaluation_requests(store) if r.get("state") == RunState.QUEUED]


def run_evaluation(request: dict, store: RunStore, echo=print) -> str:
    """Score one queued evaluation request in this process; returns its final state."""
    from .inference import evaluate_run

    _update_request(store, request, state=RunState.RUNNING, **process_record(os.getpid()))
    echo(f"evaluating {request['run']} on {request['data_dir']}")
    try:
        result = evaluate_run(request["run"], request["split"], store, request["data_dir"],
                              occlusion=request.get("occlusion"))
    except Exception as error:  # a bad folder or model must not stop the worker's queue
        message = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
        _update_request(store, request, state=RunState.FAILED, error=message[:2000])
        echo(f"evaluation {request['id']} failed: {message}")
        return RunState.FAILED
    _update_request(store, request, state=RunState.DONE, source=result.get("source"), finished=time.time())
    return RunState.DONE


def work(store: RunStore, echo=print) -> list[str]:
    """The worker loop: train queued runs, then score queued evaluations, until none are left.

    Returns the run ids trained."""
    trained: list[str] = []
    handle = acquire(store)
    # worker_running() takes the lock for an instant to test it: a worker starting
    # at that moment waits that instant out rather than giving up.
    for _ in range(20):
        if handle is not None:
            break
        time.sleep(0.1)
        handle = acquire(store)
    if handle is None:
        raise busy(store)
    while handle is not None:
        try:
            while True:
                waiting = queued(store)
                evaluations = [] if waiting else queued_evaluations(store)
                if not waiting and not evaluations:
                    break
                # TensorFlow's slow import, before anything is marked running; its C++ lines kept out of the log.
                import_tensorflow()
                if not waiting:
                    run_evaluation(evaluations[0], store, echo)
                    continue

                run_id = waiting[0].run_id
                echo(f"training {run_id}")
                run_one(run_id, store, echo)
                trained.append(run_id)
        finally:
            handle.close()
        # A run submitted after our last look, while we still held the lock, found
        # a worker "running" and started none: look again, or it would wait forever.
        # If another process holds the lock by now, it does the same when it ends.
        if not queued(store) and not queued_evaluations(store):
            break
        handle = acquire(store)
    return trained


def yield_to_the_dashboard(niceness: int | None = None) -> None:
    """Lower this process's CPU priority, for the background worker: the dashboard's server stays
    responsive while a model trains, and training still takes every cycle the server leaves idle.

    The worker runs in a session of its own, and with Linux's autogroup scheduling each session
    competes as one group whatever its tasks' nice values: the group's own nice value
    (/proc/self/autogroup) is what yields to the server. CXR_WORKER_NICE=0 turns this off.
    """
    niceness = worker_niceness() if niceness is None else niceness
    if niceness <= 0:
        return
    try:
        os.nice(niceness)
    except (AttributeError, OSError):
        pass  # no nice on this platform: train at the usual priority
    try:
        with open("/proc/self/autogroup", "w") as handle:
            handle.write(str(niceness))
    except OSError:
        pass  # no autogroup (not Linux, or disabled): os.nice above is what counts


def spawn_worker(store: RunStore) -> subprocess.Popen | None:
    """Start a background worker unless one is running. Its output goes to RUNS/worker.log."""
    if worker_running(store):
        return None
    command = [sys.executable, "-m", "cxr_core", "worker", "--runs", str(store.root)]
    # A new session: the worker outlives a Streamlit rerun or a server restart.
    env = dict(os.environ)
    for secret in ("CXR_TEACHER_KEY", "teacher_key"):  # st.secrets copies top-level secrets into os.environ
        env.pop(secret, None)  # the worker never needs the class's key: keep it out of its environment
    with open(store.root / "worker.log", "ab") as log:  # the child keeps its own copy of the descriptor
        worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  cwd=PROJECT_ROOT, env=env, start_new_session=True)
    # Its exit status is read as soon as it ends; unread, it would linger as a zombie beside the server.
    threading.Thread(target=worker.wait, name=f"reap-worker-{worker.pid}", daemon=True).start()
    return worker


def submit(settings: TrainSettings, data_dir, store: RunStore | None = None, *, start: bool = True) -> str:
    """Queue one run; returns its id. It starts at once when no other job runs.

    Refused (UserError) when the queue is full (check_room), unless this process holds the
    worker lock and so trains the run itself now."""
    store = store or RunStore()
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.exists():
        raise UserError(f"data folder {data_dir} does not exist")
    with queue_lock(store):
        if not trains_here(store):
            check_room(store)
        run = store.new_run(settings.to_dict(), str(data_dir), state=RunState.QUEUED)
    if start:
        spawn_worker(store)
    return run.run_id


def queue_lineup(models, data_dir, store: RunStore, *, recipe: str = "improved", weights: str | None = None) -> list[str]:
    """Queue each of `models` with its settings under `recipe` (registry), skipping a model whose run
    with that recipe already waits or trains on this folder; starts the worker. Returns the new run ids.

    weights: for pretrained models only, where their base starts (registry.Weights or a file)."""
    from . import registry

    folder = str(Path(data_dir).expanduser().resolve())
    waiting = {(r.model, r.recipe) for r in store.list()
               if r.state in ACTIVE_STATES and r.settings.get("data_dir") == folder}
    todo = [m for m in models if (m, recipe) not in waiting]
    check_room(store, len(todo))  # the whole lineup or none of it
    queued_ids = []
    for model in todo:
        settings = registry.default_settings(model, recipe)
        if weights and registry.get(model).pretrained:
            settings.weights = weights
        queued_ids.append(submit(settings, folder, store, start=False))
    if queued_ids:
        spawn_worker(store)
    return queued_ids


def ahead_of_a_new_run(store: RunStore) -> int:
    """How many runs a run queued now waits behind: the queued ones and a running one."""
    return len(queued(store)) + any(r.state == RunState.RUNNING for r in store.list())


def cancel(run_id: str, store: RunStore | None = None) -> str:
    """Stop a run: queued runs are marked cancelled; a running one is sent SIGTERM."""
    store = store or RunStore()
    run = store.get(run_id)
    if run.state == RunState.QUEUED:
        store.set_status(run_id, state=RunState.CANCELLED, finished=time.time(), error="removed from the queue")
        return RunState.CANCELLED
    if run.state == RunState.RUNNING:
        try:
            os.kill(int(run.status["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
        return RunState.STOPPING
    raise UserError(f"run {run_id} is {run.state}, not queued or running; nothing to stop")


# A worker started moments ago may not hold its lock yet: this long after the oldest request, a
# queue with no worker is stuck (say, after a server restart), not starting.
WORKER_START_GRACE_S = 15.0


def keep_queue_moving(store: RunStore, now: float | None = None) -> bool:
    """Start a worker when runs or evaluations have waited WORKER_START_GRACE_S with none working.

    Pages that show the queue call it on each refresh; True when it started one."""
    created = [r.status.get("created") or 0 for r in queued(store)]
    created += [r.get("created") or 0 for r in queued_evaluations(store)]
    now = time.time() if now is None else now
    if created and now - min(created) > WORKER_START_GRACE_S and not worker_running(store):
        return spawn_worker(store) is not None
    return False


def wait(run_id: str, store: RunStore, timeout: float = 600.0, poll: float = 0.5) -> str:
    """Block until a run leaves queued/running (for scripts and tests); returns its state."""
    deadline = time.time() + timeout
    state = store.get(run_id).state
    while time.time() < deadline:
        state = store.get(run_id).state
        if state not in ACTIVE_STATES:
            return state
        time.sleep(poll)
    raise TimeoutError(f"run {run_id} still {state} after {timeout:.0f}s")

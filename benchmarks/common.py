"""What the quality and speed benchmarks share: the machine, tables, marked sections of the docs, JSON.

Not a script; the benchmarks import it. Starting the dashboard and Chromium is `dashboard.py`'s.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

try:
    from cxr_core.config import PROJECT_ROOT
except ModuleNotFoundError as error:  # a checkout whose package was never installed
    raise SystemExit("cxr_core is not installed: run `pip install -r requirements.txt` in the project folder "
                     "(its `-e .` line installs it), then run the benchmark again") from error
from cxr_core.store import atomic_write_bytes, atomic_write_json

DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "chest_xray"
# Half of the official test split: the shifted distribution every quality figure is measured on.
DEFAULT_TEST_DATA = PROJECT_ROOT.parent / "shared" / "data" / "chest_xray_test_dev"
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
# Ignored by git (.gitignore): the benchmark's own run store, logs and scratch folders.
WORK_DIR = PROJECT_ROOT / "benchmarks" / "out"
# The generated sections: (file under the documentation root, marker name). Each benchmark rewrites its own
# with --update-docs (--update-readme is the older name of that flag); --docs-root points them at a copy.
DOC_SECTIONS = {
    "quality": "docs/results.md", "ablation": "docs/results.md", "results": "README.md",
    "speed": "docs/performance.md", "classroom": "docs/performance.md",
}


def now_iso() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def _cpu_model() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""  # psutil does not name it
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.lower().startswith("model name")),
                platform.processor() or platform.machine())


def _gpus() -> list[str]:
    """GPUs as TensorFlow sees them when it is loaded, else as the NVIDIA driver lists them (importing
    TensorFlow just for this costs seconds)."""
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        return [line.split(" (UUID")[0] for line in out.stdout.splitlines() if line.startswith("GPU ")]
    except (OSError, subprocess.TimeoutExpired):
        return []


def machine() -> dict:
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    gpus = _gpus()
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": _cpu_model(),
            "cores": len(psutil.Process().cpu_affinity() or []) or psutil.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "gpu": ", ".join(gpus) if gpus else "none",
            **{name: version(name) for name in ("tensorflow", "keras", "streamlit")}}


def machine_line(m: dict) -> str:
    return (f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, GPU: {m['gpu']}; "
            f"{m['platform']}, Python {m['python']}, TensorFlow {m['tensorflow']}, Keras {m['keras']}")


def command_line(argv: list[str] | None = None) -> str:
    """The command as a person would retype it from the project root, absolute paths made relative
    to it (--data /home/me/x and --data=/home/me/x alike): results never name this machine's folders."""
    argv = sys.argv if argv is None else argv

    def relative(arg: str) -> str:
        option, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        return f"{option}{sep}{project_relative(value)}" if os.path.isabs(value) else arg

    return "python " + shlex.join([project_relative(argv[0]), *map(relative, argv[1:])])


def project_relative(path) -> str:
    """A path as seen from the project root: results must not name this machine's absolute folders."""
    # abspath, not resolve(): a data folder reached through a symlink keeps the name it was given.
    return os.path.relpath(os.path.abspath(Path(path).expanduser()), PROJECT_ROOT)


def git_state(root: Path = PROJECT_ROOT) -> dict:
    """The commit the code was at and whether the tree differed from it (untracked files count; the
    benchmarks' own stored results do not, so a second benchmark run after a first is still at the commit)."""
    def git(*args) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--", ".", ":(exclude)benchmarks/results") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def commit_label(state: dict | None) -> str:
    """The commit as the docs print it; whether the tree was dirty stays in the JSON."""
    return state["commit"][:10] if state and state.get("commit") else "not recorded"


def provenance(result: dict) -> str:
    """The one line of provenance a generated section carries: date, commit, machine, command."""
    machine = result["machine"] if isinstance(result["machine"], str) else machine_line(result["machine"])
    return (f"Measured on {str(result['date'])[:10]} at commit {commit_label(result.get('git'))} on {machine}, "
            f"by `{result['command']}`.")


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub markdown table (pandas' to_markdown needs `tabulate`, which is not a dependency)."""
    def cell(value) -> str:
        return fmt(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_between_markers(text: str, name: str, body: str) -> str:
    """Replace what lies between `<!-- name:start -->` and `<!-- name:end -->`; the rest is kept byte for byte."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"expected exactly one {start} ... {end} pair in the file")
    return pattern.sub(lambda _: f"{start}\n{body.strip()}\n{end}", text, count=1)


def _readable(path: Path, mode: int | None = None) -> None:
    """atomic_write_* create files 0600 (mkstemp); results and the README are for everyone to read."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode if mode is not None else 0o666 & ~umask)


def update_section(path: Path, name: str, body: str) -> None:
    """Rewrite the `name` section between its markers in `path`, keeping the file's permissions."""
    path = Path(path)
    text, mode = path.read_text(), path.stat().st_mode & 0o777
    atomic_write_bytes(path, replace_between_markers(text, name, body).encode())
    _readable(path, mode)


def update_docs(sections: dict[str, str], root: Path = PROJECT_ROOT) -> list[Path]:
    """Rewrite each {marker name: body} in the file DOC_SECTIONS names under `root`; returns the files."""
    for name, body in sections.items():
        update_section(Path(root) / DOC_SECTIONS[name], name, body)
    return sorted({Path(root) / DOC_SECTIONS[name] for name in sections})


def add_docs_flags(parser) -> None:
    """--update-docs (alias --update-readme) and the hidden --docs-root every benchmark takes."""
    parser.add_argument("--update-docs", "--update-readme", dest="update_docs", action="store_true",
                        help="rewrite this benchmark's generated sections of README.md and docs/")
    parser.add_argument("--docs-root", type=Path, default=PROJECT_ROOT, help=argparse.SUPPRESS)


def read_results(out_dir: Path, stem: str) -> dict:
    """A benchmark's stored result (OUT/STEM.json), for --render; exits with what to do when there is none."""
    path = Path(out_dir) / f"{stem}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"--render: cannot read {path} ({error}); run the benchmark first") from error


def write_results(out_dir: Path, stem: str, result: dict, markdown: str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    atomic_write_json(json_path, result)
    atomic_write_bytes(md_path, (markdown.rstrip() + "\n").encode())
    for path in (json_path, md_path):
        _readable(path)
    return json_path, md_path


def cli_env(**overrides) -> dict:
    """Environment for `python -m cxr_core` children: this one's, with `overrides` (paths become strings)."""
    return dict(os.environ, **{k: str(v) for k, v in overrides.items()})


# TensorFlow's start-up lines that TF_CPP_MIN_LOG_LEVEL does not silence; kept in logs, not echoed.
_CHATTER = re.compile(r"^([IWE]\d{4} |WARNING: All log messages|To enable the following instructions|"
                      r".*UserWarning: `shuffle=True`|\s+self\.data_adapter = )")


def run_child(command: list[str], *, env: dict | None = None, log_path: Path | None = None, echo: bool = True) -> dict:
    """Run a child process to the end, streaming its output; returns rc, lines, wall time and peak RSS.

    Peak resident memory is wait4's ru_maxrss (KiB on Linux): the child's lifetime high-water mark,
    measured by the kernel, not sampled.
    """
    started, lines = time.perf_counter(), []
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=PROJECT_ROOT, env=env or cli_env(), bufsize=1)
    try:
        with open(log_path or os.devnull, "w") as log:
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                log.write(line)
                log.flush()
                if echo and not _CHATTER.match(line):
                    print(f"    {lines[-1]}", flush=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    return {"rc": proc.returncode, "lines": lines, "wall_s": time.perf_counter() - started,
            "peak_rss_mib": usage.ru_maxrss / 1024}


def app_pages(app: Path) -> list[dict]:
    """The pages app.py hands to st.Page (or Page), in the order written: each one's `file` (relative to
    app.py's folder; None for a page given as a function), nav `title`, `url_path`, whether it is the
    `default`, and `heading`, the first constant st.title of its script (None when there is none).
    Nothing is guessed from folders: a file named but missing stays in the list, with no heading."""
    app = Path(app)
    if not app.is_file():
        return []
    tree = ast.parse(app.read_text())

    def first_title(node) -> str | None:
        return next((c.args[0].value for c in ast.walk(node) if isinstance(c, ast.Call) and c.args
                     and getattr(c.func, "attr", None) == "title" and isinstance(c.args[0], ast.Constant)), None)

    functions = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    calls = sorted((c for c in ast.walk(tree) if isinstance(c, ast.Call) and c.args
                    and getattr(c.func, "attr", getattr(c.func, "id", None)) == "Page"),
                   key=lambda c: (c.lineno, c.col_offset))
    pages = []
    for call in calls:
        target, options = call.args[0], {k.arg: k.value.value for k in call.keywords if isinstance(k.value, ast.Constant)}
        file = str(Path(target.value)) if isinstance(getattr(target, "value", None), str) else None
        script = functions.get(getattr(target, "id", None)) if file is None else \
            ast.parse((app.parent / file).read_text()) if (app.parent / file).is_file() else None
        pages.append({"file": file, "title": options.get("title") or Path(file or "home").stem, "heading":
                      script and first_title(script), "url_path": options.get("url_path", ""),
                      "default": bool(options.get("default"))})
    return pages


def spread(values: list) -> dict:
    """Median and range over repeats; None values (a figure a repeat lacked) are counted, not averaged."""
    known = [float(v) for v in values if v is not None]
    middle = float(statistics.median(known)) if known else None
    return {"median": middle, "min": min(known, default=None), "max": max(known, default=None), "n": len(values),
            "missing": len(values) - len(known), "values": [None if v is None else float(v) for v in values]}


class TreeSampler(threading.Thread):
    """A process and its descendants, through psutil, every `interval` s until stopped: the peak of
    their summed resident memory (`peak_rss_mib`), the CPU seconds they used since the start (`cpu_s`,
    children that ended in between are lost) and the machine's highest 1-minute load (`load_max`)."""

    def __init__(self, pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.root, self.interval, self.stop = psutil.Process(pid), interval, threading.Event()
        self.peak_rss_mib, self.cpu_s, self.load_max = 0.0, 0.0, 0.0
        self.cpu_start = self.usage()[1]

    def usage(self) -> tuple[float, float]:
        """(resident MiB, CPU seconds) of the tree now."""
        rss = cpu = 0.0
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return rss, self.cpu_start + self.cpu_s
        for process in tree:
            try:
                with process.oneshot():
                    rss += process.memory_info().rss / 2**20
                    times = process.cpu_times()
                    cpu += times.user + times.system
            except psutil.Error:
                continue  # it ended between the listing and the reading
        return rss, cpu

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            rss, cpu = self.usage()
            self.peak_rss_mib, self.cpu_s = max(self.peak_rss_mib, rss), max(self.cpu_s, cpu - self.cpu_start)
            self.load_max = max(self.load_max, psutil.getloadavg()[0])

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()

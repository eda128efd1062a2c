"""The classroom benchmark's figures and report: what the server costs per page view, and the
docs/performance.md section (`classroom.py --update-docs`, or `--render` from classroom.json).

The latencies are the clients': Chromium tabs that render every page, on the same cores as the server
when the benchmark runs them on one machine. The server's CPU seconds per page view is what tells how
many students one machine can serve: its inverse is the page views per second one core can answer.
"""

from __future__ import annotations

import json
import sys

import common


def server_cost(result: dict, walks: list[dict], cpu_s: float | None, cores: int | None) -> dict:
    """page_views, server_cpu_s_per_view and the implied capacity, from the server tree's CPU seconds."""
    views = sum(len(walk["steps"]) for walk in walks)
    per_view = cpu_s / views if cpu_s is not None and views else None
    return {"page_views": views,
            "server_cpu_s_per_view": None if per_view is None else round(per_view, 3),
            # A core busy only with the server answers 1 / per_view views a second; the machine, cores times that.
            "capacity_views_per_s_per_core": None if not per_view else round(1 / per_view, 2),
            "capacity_views_per_s_machine": None if not per_view or not cores else round(cores / per_view, 1)}


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def render(result: dict) -> str:
    """The docs section: one line of provenance, then each figure and whose it is."""
    steps = result.get("per_step") or {}
    per_page = " / ".join(f"{name} {values['p50_s']:.1f} s" for name, values in steps.items())
    training = result.get("training_under_load_batches_per_s"), result.get("training_alone_batches_per_s")
    rows = [
        ["sessions at once, errors", f"{result['sessions']}, {result['errors']}", "clients"],
        ["page time p50 / p95 (click to page shown and idle)",
         f"{_seconds(result.get('p50_s'))} / {_seconds(result.get('p95_s'))}", "clients (browser rendering included)"],
        ["per page p50", per_page or "n/a", "clients"],
        ["server CPU seconds per page view", _seconds(result.get("server_cpu_s_per_view"))
         + f" ({result.get('server_cpu_s', 'n/a')} s for {result.get('page_views', 'n/a')} views)", "server"],
        ["implied capacity: page views per second per core", common.fmt(result.get("capacity_views_per_s_per_core"), 2),
         "server"],
        ["server process tree peak memory (with the predictor process)",
         "n/a" if result.get("peak_rss_mb") is None else f"{result['peak_rss_mb']:.0f} MB", "server"],
        ["background training under load / alone, batches/s",
         " / ".join("n/a" if v is None else f"{v:.2f}" for v in training), "training worker"],
    ]
    return "\n".join([common.provenance(result), "", common.markdown_table(["figure", "measured", "whose"], rows)])


def publish(result: dict, args) -> None:
    """classroom.json/.md into --out, and with --update-docs the section of docs/performance.md."""
    body = render(result)
    if args.out:
        common.write_results(args.out, "classroom", result, "# Classroom benchmark\n\n" + body)
    if args.update_docs:
        for path in common.update_docs({"classroom": body}, args.docs_root):
            print(f"updated {path}", file=sys.stderr)


def render_stored(args) -> int:
    source = (args.out or common.RESULTS_DIR) / "classroom.json"
    try:
        result = json.loads(source.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"--render: cannot read {source} ({error}); run the benchmark with --out first")
    print(render(result))
    publish(result, args)
    return 0

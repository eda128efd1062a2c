"""What several commands share: the data folder argument, the run store, the synthetic-data label."""

from __future__ import annotations

from ..config import UserError, configured_data_dir


def data_arg(value: str | None):
    """--data, else $CXR_DATA_DIR, else the synthetic demo set (generated on first use)."""
    if value:
        return value
    configured = configured_data_dir()
    if configured:
        return configured
    from ..demo import ensure_demo_dataset

    return ensure_demo_dataset()


def store_of(args):
    from ..store import RunStore

    return RunStore(args.runs)


def synthetic_note(store, run_id: str) -> str:
    """A label for output about a run trained on the synthetic demo set; empty otherwise."""
    try:
        synthetic = store.get(run_id).status.get("synthetic")
    except UserError:
        return ""
    return "  [trained on SYNTHETIC demo data: says nothing about real X-rays]" if synthetic else ""

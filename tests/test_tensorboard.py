"""Each run writes TensorBoard event files (`tensorboard --logdir runs/`) with the epoch curves."""

from __future__ import annotations


def test_a_run_writes_tensorboard_events_with_its_epoch_curves(tiny_run):
    import tensorflow as tf

    store, run_id = tiny_run
    events = sorted((store.run_path(run_id) / "tensorboard").glob("**/events.out.tfevents.*"))
    assert events, f"no event files under {store.run_path(run_id) / 'tensorboard'}"
    steps = {}
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps.setdefault((path.parent.name, value.tag), set()).add(event.step)
    # Both epochs of the tiny run, for training and validation: what the curves are drawn from.
    assert steps[("train", "epoch_loss")] == {0, 1}
    assert steps[("validation", "epoch_auc")] == {0, 1}


def test_a_run_trains_without_the_tensorboard_package(demo_dir, tmp_path, monkeypatch):
    import sys

    from cxr_core.jobs import submit
    from cxr_core.registry import default_settings
    from cxr_core.store import RunStore
    from cxr_core.train import run_job

    # None in sys.modules makes `import tensorboard...` fail, as on a machine without the package.
    for name in ["tensorboard", *(n for n in list(sys.modules) if n.startswith("tensorboard."))]:
        monkeypatch.setitem(sys.modules, name, None)
    store = RunStore(tmp_path / "runs")
    settings = default_settings("baseline_cnn")
    settings.epochs, settings.image_size, settings.batch_size = 1, 48, 16
    run_id = submit(settings, demo_dir, store, start=False)
    assert run_job(run_id, store, echo=lambda line: None) == "done", store.get(run_id).status.get("error")
    assert not (store.run_path(run_id) / "tensorboard").exists()

"""The CLI contract (scripts and the benchmarks depend on it): train -> evaluate --json ->
predict --json through `python -m cxr_core` processes, info and runs, and one-line errors."""

from __future__ import annotations

import json
import re
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import f1_score, roc_auc_score

from cxr_core.__main__ import main
from cxr_core.config import CLASSES
from cxr_core.store import RunStore

EVALUATION_KEYS = {"run", "split", "n", "accuracy", "macro_f1", "auc", "sensitivity", "specificity", "threshold",
                   "confusion_matrix"}


def assert_one_line_error(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "\n" not in lines[0]


@pytest.fixture(scope="module")
def trained(demo_dir, tmp_path_factory, cli):
    """One run trained through the CLI: (store, run_id, completed process)."""
    runs = tmp_path_factory.mktemp("cli_runs")
    done = cli("train", "--data", demo_dir, "--model", "baseline_cnn", "--epochs", 2, "--image-size", 48,
               "--batch-size", 16, "--seed", 5, "--runs", runs)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return RunStore(runs), done.stdout.strip().splitlines()[-1], done


def test_train_prints_progress_and_the_run_id_last(trained):
    store, run_id, done = trained
    assert store.get(run_id).state == "done"
    assert re.fullmatch(r"\d{8}-\d{6}-baseline_cnn-[0-9a-f]{4}", run_id), run_id
    assert "epoch 2/2" in done.stdout and "SYNTHETIC" in done.stdout
    settings = store.get(run_id).settings
    assert (settings["epochs"], settings["image_size"], settings["seed"]) == (2, 48, 5)
    assert "Traceback" not in done.stderr


def test_evaluate_json(trained, cli):
    store, run_id, _ = trained
    done = cli("evaluate", run_id, "--split", "test", "--runs", store.root, "--json", "--recompute")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert EVALUATION_KEYS <= set(result)
    assert result["run"] == run_id and result["split"] == "test"
    (tn, fp), (fn, tp) = result["confusion_matrix"]
    recorded = store.split(run_id)
    test_labels = recorded.label[recorded.split == "test"]
    assert tn + fp + fn + tp == result["n"] == len(test_labels)
    assert tn + fp == (test_labels == 0).sum() and fn + tp == (test_labels == 1).sum()  # PNEUMONIA positive
    assert result["accuracy"] == pytest.approx((tn + tp) / result["n"])
    assert result["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert result["specificity"] == pytest.approx(tn / (tn + fp))
    assert result["threshold"] == pytest.approx(store.threshold(run_id))
    scored = pd.read_csv(store.run_path(run_id) / "predictions_test.csv")
    assert result["auc"] == pytest.approx(roc_auc_score(scored["label"], scored["probability"]))
    assert result["macro_f1"] == pytest.approx(f1_score(scored["label"], scored["predicted"], average="macro"))
    # Recomputed from the files it equals what training stored: one decoder, one preprocessing.
    stored = json.loads((store.run_path(run_id) / "evaluation_test.json").read_text())
    assert stored["confusion_matrix"] == result["confusion_matrix"]
    assert stored["auc"] == pytest.approx(result["auc"], abs=1e-6)


def test_predict_json(trained, demo_dir, tmp_path, cli):
    store, run_id, _ = trained
    predictions = pd.read_csv(store.run_path(run_id) / "predictions_test.csv")
    good = [str(demo_dir / p) for p in predictions.path[:2]]
    text = tmp_path / "notes.jpeg"
    text.write_text("not an image\n")
    missing = tmp_path / "missing.png"
    colour = tmp_path / "holiday.png"
    y, x = np.mgrid[0:200, 0:300]
    Image.fromarray(np.stack([x * 255 // 299, y * 255 // 199, 255 - x * 255 // 299], -1).astype(np.uint8)).save(colour)
    done = cli("predict", run_id, *good, text, missing, colour, "--runs", store.root, "--json")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    results = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert [r["file"] for r in results] == [*good, str(text), str(missing), str(colour)]
    for result, expected in zip(results[:2], predictions.probability[:2]):
        # in_distribution is the check's verdict; a warning comes with it exactly when it is false.
        assert {"file", "label", "probability", "in_distribution"} <= set(result) <= {
            "file", "label", "probability", "in_distribution", "warning"}
        assert isinstance(result["in_distribution"], bool)
        assert ("warning" in result) == (result["in_distribution"] is False)
        assert result["label"] in CLASSES and 0 <= result["probability"] <= 1
        assert result["probability"] == pytest.approx(expected, abs=1e-5)  # same pixels as evaluation saw
        assert result["label"] == CLASSES[int(result["probability"] >= store.threshold(run_id))]
    for result, path in zip(results[2:4], (text, missing)):
        assert set(result) == {"file", "error"} and str(path) in result["error"]
    assert results[4]["in_distribution"] is False and results[4]["label"] in CLASSES
    assert "colour image: chest X-rays are grayscale" in results[4]["warning"]


def test_predict_json_of_a_run_trained_before_the_check(trained, demo_dir, tmp_path, cli):
    store, run_id, _ = trained
    shutil.copytree(store.run_path(run_id), tmp_path / run_id)
    for name in ("ood.npz", "ood.json"):
        (tmp_path / run_id / name).unlink()
    image = next((demo_dir / "test" / "NORMAL").glob("*.jpeg"))
    done = cli("predict", run_id, image, "--runs", tmp_path, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["in_distribution"] is None and "warning" not in result and result["label"] in CLASSES


def test_predict_plain_exits_zero_when_every_file_is_read(trained, demo_dir, capsys):
    store, run_id, _ = trained
    image = next((demo_dir / "test" / "NORMAL").glob("*.jpeg"))
    assert main(["predict", run_id, str(image), "--runs", str(store.root)]) == 0  # in-process: TF is loaded
    out, err = capsys.readouterr()
    assert out.startswith(f"{image}: ") and "P(pneumonia)" in out
    assert err == "[trained on SYNTHETIC demo data: says nothing about real X-rays]\n"  # the demo run says so


def test_tensorflow_start_up_lines_stay_off_the_terminal(trained, demo_dir, cli):
    store, run_id, _ = trained
    image = next((demo_dir / "test" / "NORMAL").glob("*.jpeg"))
    done = cli("predict", run_id, image, "--runs", store.root)
    assert done.returncode == 0, done.stderr[-2000:]
    # No "oneDNN custom operations", "Could not find cuda drivers" or "failed call to cuInit" lines:
    # only the note that the run learnt from the synthetic demo set.
    assert done.stderr.splitlines() == ["[trained on SYNTHETIC demo data: says nothing about real X-rays]"]
    assert done.stdout.startswith(f"{image}: ")


def test_info_json(demo_dir, cli):
    done = cli("info", "--data", demo_dir, "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["synthetic"] is True and info["images"] == 120
    assert info["classes"] == {"NORMAL": 60, "PNEUMONIA": 60}
    assert {k for k, v in info["official_splits"].items() if v} == {"train", "test"}
    assert info["patients"] == sum(row["patients"] for row in info["splits"])  # no patient in two splits
    assert info["patient_overlap"] == {"train/val": 0, "train/test": 0, "val/test": 0}
    assert sum(row["images"] for row in info["splits"]) == 120
    assert {row["split"] for row in info["splits"]} == {"train", "val", "test"}


def test_info_text_says_what_the_dataset_page_says_about_leakage(demo_dir, capsys):
    from cxr_core import data, explore

    assert main(["info", "--data", str(demo_dir)]) == 0
    out = capsys.readouterr().out
    scan = data.scan_folder(demo_dir)
    split = data.assign_splits(scan.manifest, seed=42)
    findings = explore.leakage_findings(data.leakage_report(split), explore.naive_split_leakage(scan.manifest))
    assert findings and all(sentence in out for _, sentence in findings)


def test_explore_json_reports_balance_and_leakage(demo_dir, cli):
    result = cli("explore", "--data", demo_dir, "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"]["synthetic"] is True
    assert all(v == 0 for v in report["patient_overlap"].values())
    # Every one of the demo set's 120 images belongs to one counted patient.
    assert sum(row["patients"] * row["images_per_patient"] for row in report["images_per_patient"]) == 120


def test_compare_two_runs_gives_metrics_and_mcnemar(tiny_run, cli):
    store, run_id = tiny_run
    # A copy of the run under another id: identical predictions, so McNemar finds no difference.
    twin = f"{run_id}-twin"
    shutil.copytree(store.run_path(run_id), store.root / twin)
    try:
        result = cli("compare", run_id, twin, "--json", "--runs", store.root, timeout=300)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert [row["run"] for row in report["metrics"]] == [run_id, twin]
        assert report["mcnemar"]["a_right_b_wrong"] == report["mcnemar"]["a_wrong_b_right"] == 0
        assert report["mcnemar"]["significant"] is False
        assert "warning" not in report
    finally:
        shutil.rmtree(store.root / twin)


def test_runs_json_lists_good_and_broken_runs(trained, tmp_path, cli):
    store, run_id, _ = trained
    messy = tmp_path / "runs"
    shutil.copytree(store.run_path(run_id), messy / run_id)
    (messy / "half-written").mkdir()
    (messy / "half-written" / "settings.json").write_text("{")
    (messy / "stray.txt").write_text("x")
    done = cli("runs", "--runs", messy, "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["run"]: row for row in json.loads(done.stdout)}
    assert set(rows) == {run_id, "half-written"}
    assert rows[run_id]["state"] == "done" and rows[run_id]["model"] == "baseline_cnn"
    assert rows[run_id]["auc"] == pytest.approx(store.get(run_id).evaluation("test")["auc"])
    assert rows["half-written"]["state"] == "broken" and rows["half-written"]["error"]
    plain = cli("runs", "--runs", messy)
    assert plain.returncode == 0 and run_id in plain.stdout and "broken" in plain.stdout


def test_evaluate_on_another_folder_uses_all_of_its_official_test(trained, tmp_path, capsys):
    from cxr_core.demo import write_demo_dataset

    store, run_id, _ = trained
    own = RunStore(tmp_path / "runs")  # a copy: this evaluation replaces the run's stored one
    shutil.copytree(store.run_path(run_id), own.root / run_id)
    other = write_demo_dataset(tmp_path / "other", n_normal=12, n_pneumonia=14, seed=9, image_size=64)
    n_test = len(list((other / "test").rglob("*.jpeg")))
    assert main(["evaluate", run_id, "--split", "test", "--data", str(other), "--runs", str(own.root), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == n_test and sum(map(sum, result["confusion_matrix"])) == n_test
    (tn, fp), (fn, tp) = result["confusion_matrix"]
    assert tn + fp == len(list((other / "test" / "NORMAL").glob("*.jpeg")))


def test_evaluation_on_another_folder_is_stored_beside_the_own_one(trained, tmp_path, capsys):
    from cxr_core.demo import write_demo_dataset
    from cxr_core.inference import predictions

    store, run_id, _ = trained
    own = RunStore(tmp_path / "runs")
    shutil.copytree(store.run_path(run_id), own.root / run_id)
    before = own.get(run_id).evaluation("test")
    # Only class folders, as a hospital's own labelled export might be.
    other = write_demo_dataset(tmp_path / "gen", n_normal=10, n_pneumonia=12, seed=5, image_size=64) / "test"
    shutil.move(str(other), tmp_path / "hospital_b")
    folder = tmp_path / "hospital_b"
    n_images = len(list(folder.rglob("*.jpeg")))

    assert main(["evaluate", run_id, "--split", "test", "--data", str(folder), "--runs", str(own.root), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["source"] == "hospital_b" and result["n"] == n_images
    assert result["ci_method"] == "bootstrap over patients"
    run = own.get(run_id)
    assert run.evaluation("test") == before  # the run's own evaluation is untouched
    assert run.evaluation("test", "hospital_b")["n"] == n_images
    assert run.evaluation_sources("test") == ["own", "hospital_b"]
    assert len(predictions(run_id, "test", own, "hospital_b")) == n_images
    assert len(predictions(run_id, "test", own)) == before["n"]

    # compare --on reads the folder's evaluation; runs --json lists where each run was scored.
    assert main(["compare", run_id, "--on", "hospital_b", "--runs", str(own.root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["on"] == "hospital_b" and report["metrics"][0]["n"] == n_images
    assert main(["runs", "--runs", str(own.root), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)[0]
    assert set(listed["evaluated_on"]) == {"own", "hospital_b"}
    assert main(["compare", run_id, "--on", "nowhere", "--runs", str(own.root)]) == 2
    assert "no test evaluation on nowhere" in capsys.readouterr().err


def test_evaluate_on_a_folder_without_labels_says_what_to_do(trained, tmp_path, capsys):
    store, run_id, _ = trained
    (tmp_path / "unlabelled").mkdir()
    (tmp_path / "unlabelled" / "a.jpeg").write_bytes(b"x")
    assert main(["evaluate", run_id, "--data", str(tmp_path / "unlabelled"), "--runs", str(store.root)]) == 2
    assert "NORMAL" in capsys.readouterr().err


# --- errors: one line on stderr, non-zero exit, no traceback --------------------------------------


@pytest.mark.parametrize("args", [
    ["train", "--data", "{missing}", "--model", "baseline_cnn"],
    ["evaluate", "no-such-run", "--runs", "{runs}"],
    ["train", "--model", "resnet9000"],
])
def test_errors_in_a_real_process(args, tmp_path, cli):
    args = [a.format(missing=tmp_path / "missing", runs=tmp_path) for a in args]
    done = cli(*args, timeout=60)
    assert done.returncode == 2
    assert_one_line_error(done.stderr)
    assert done.stdout == ""


@pytest.fixture
def bad_paths(tmp_path, demo_dir):
    (tmp_path / "file.txt").write_text("x")
    with zipfile.ZipFile(tmp_path / "chest-xray-pneumonia.zip", "w") as archive:
        archive.writestr("chest_xray/train/NORMAL/IM-0001-0001.jpeg", b"")
    one_class = tmp_path / "one_class"
    shutil.copytree(demo_dir / "train" / "NORMAL", one_class / "train" / "NORMAL")
    (tmp_path / "runs").mkdir()
    return {"missing": tmp_path / "missing", "file": tmp_path / "file.txt", "zip": tmp_path / "chest-xray-pneumonia.zip",
            "one_class": one_class, "demo": demo_dir, "runs": tmp_path / "runs", "tmp": tmp_path}


@pytest.mark.parametrize("args,expected", [
    ([], "required"),
    (["frobnicate"], "invalid choice"),
    (["train", "--model", "nope"], "invalid choice"),
    (["train", "--data", "{demo}", "--model", "baseline_cnn", "--epochs", "two"], "invalid int value"),
    (["train", "--data", "{demo}", "--model", "baseline_cnn", "--image-size", "8", "--runs", "{runs}"], "at least 32"),
    (["train", "--data", "{demo}", "--model", "baseline_cnn", "--epochs", "0", "--runs", "{runs}"], "at least 1"),
    (["train", "--data", "{missing}", "--model", "baseline_cnn", "--runs", "{runs}"], "does not exist"),
    (["train", "--data", "{one_class}", "--model", "baseline_cnn", "--runs", "{runs}"], "no PNEUMONIA images"),
    (["train", "--data", "{demo}", "--model", "mobilenetv2_frozen", "--weights", "{missing}", "--runs", "{runs}"],
     "no such file"),
    (["train", "--data", "{demo}", "--model", "baseline_cnn", "--runs", "{file}/runs"], "Not a directory"),
    (["info", "--data", "{missing}"], "does not exist"),
    (["info", "--data", "{file}"], "is a file"),
    (["info", "--data", "{zip}"], "extract it"),
    (["info", "--data", "{tmp}"], "extract it there first"),
    (["evaluate", "no-such-run", "--runs", "{runs}"], "no run 'no-such-run'"),
    (["evaluate", "../etc", "--runs", "{runs}"], "invalid run id"),
    (["evaluate", "x", "--split", "holdout", "--runs", "{runs}"], "invalid choice"),
    (["predict", "no-such-run", "a.jpeg", "--runs", "{runs}"], "no run"),
    (["predict", "x"], "the following arguments are required: FILE"),
    (["cancel", "/etc/passwd", "--runs", "{runs}"], "invalid run id"),
])
def test_errors_are_one_line(args, expected, bad_paths, capsys):
    argv = [a.format(**bad_paths) for a in args]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2
    assert_one_line_error(err)
    assert expected in err
    assert out == ""
    assert list(bad_paths["runs"].iterdir()) == []  # nothing was created in the store


def test_info_on_the_real_data(real_data, capsys):
    assert main(["info", "--data", str(real_data), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 5216 and info["classes"] == {"NORMAL": 1341, "PNEUMONIA": 3875}
    assert info["patient_overlap"] == {"train/val": 0, "train/test": 0, "val/test": 0}
    assert sum(row["images"] for row in info["splits"]) == 5216


# ---------------------------------------------------------------- the Lesson's commands


def test_calibration_json_agrees_with_sklearn(trained, cli):
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    from cxr_core.calibration import fit_temperature

    store, run_id, _ = trained
    done = cli("calibration", run_id, "--runs", store.root, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    test = pd.read_csv(store.run_path(run_id) / "predictions_test.csv")
    prob_true, prob_pred = calibration_curve(test["label"], test["probability"], n_bins=10)
    np.testing.assert_allclose(result["bins"]["observed"], prob_true)
    np.testing.assert_allclose(result["bins"]["mean_predicted"], prob_pred)
    assert result["brier"] == pytest.approx(brier_score_loss(test["label"], test["probability"]))
    bins = result["bins"]
    gaps = np.abs(np.asarray(bins["observed"]) - np.asarray(bins["mean_predicted"]))
    assert result["ece"] == pytest.approx(np.sum(gaps * bins["count"]) / np.sum(bins["count"]))
    assert result["synthetic"] is True and result["temperature_fitted_on"] == "validation predictions"
    val = pd.read_csv(store.run_path(run_id) / "predictions_val.csv")
    assert result["temperature"] == pytest.approx(fit_temperature(val["label"], val["probability"]))
    text = cli("calibration", run_id, "--runs", store.root)
    assert "ECE" in text.stdout and "SYNTHETIC" in text.stdout


def test_evaluate_occluded_is_stored_apart(trained, cli):
    store, run_id, _ = trained
    plain = (store.run_path(run_id) / "evaluation_test.json").read_text()
    done = cli("evaluate", run_id, "--split", "test", "--occlude", "outside", "--runs", store.root, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["source"] == "own+occlude-outside" and EVALUATION_KEYS <= set(result)
    assert (store.run_path(run_id) / "evaluation_test@own+occlude-outside.json").is_file()
    assert (store.run_path(run_id) / "evaluation_test.json").read_text() == plain
    bad = cli("evaluate", run_id, "--occlude", "heart", "--runs", store.root)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_predict_heatmap_png_of_the_trained_and_of_a_randomized_model(trained, demo_dir, tmp_path, cli):
    store, run_id, _ = trained
    xray = sorted((demo_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    trained_png, random_png, big_png = tmp_path / "cam.png", tmp_path / "random.png", tmp_path / "big.png"
    for out, extra in ((trained_png, ()), (random_png, ("--randomized",)), (big_png, ("--heatmap-size", 200))):
        done = cli("predict", run_id, xray, "--runs", store.root, "--heatmap", out, *extra)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "SYNTHETIC" in done.stderr
    with Image.open(trained_png) as a, Image.open(random_png) as b, Image.open(big_png) as c:
        assert a.size == b.size == (48, 48) and c.size == (200, 200) and a.mode == "RGB"
        assert not np.array_equal(np.asarray(a), np.asarray(b))
    two = cli("predict", run_id, xray, xray, "--runs", store.root, "--heatmap", tmp_path / "x.png")
    assert two.returncode == 2
    assert_one_line_error(two.stderr)


def test_report_is_a_self_contained_html_file(trained, tmp_path, cli):
    store, run_id, _ = trained
    out = tmp_path / "report.html"
    done = cli("report", run_id, "--runs", store.root, "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    html = out.read_text()
    assert not re.search(r"<script[^>]*src=[\"']?https?://", html)
    assert html.count('class="plotly-graph-div"') >= 3 and "Plotly.newPlot" in html
    assert run_id in html and "SYNTHETIC" in html
    missing = cli("report", "no-such-run", "--runs", store.root, "--out", out)
    assert missing.returncode == 2
    assert_one_line_error(missing.stderr)


def test_runs_and_compare_label_synthetic_runs(trained, cli):
    store, run_id, _ = trained
    assert "SYNTHETIC" in cli("runs", "--runs", store.root).stdout
    assert json.loads(cli("runs", "--runs", store.root, "--json").stdout)[0]["synthetic"] is True
    done = cli("compare", run_id, "--runs", store.root)
    assert done.returncode == 0 and "SYNTHETIC" in done.stdout


def test_lesson_prints_every_step_it_can_without_tensorflow(trained, demo_dir, cli):
    store, run_id, _ = trained
    done = cli("lesson", "--data", demo_dir, "--runs", store.root, "--prevalence", 0.1)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    steps = result["steps"]
    assert result["synthetic"] is True and steps["1_census"][-1]["split"] == "all"
    assert "1-nearest-neighbour" in steps["2_validation_and_patients"]["measured"]["method"]
    entry = steps["4_to_7_per_run"]["baseline_cnn"]
    assert entry["run"] == run_id and entry["at_prevalence"]["prevalence"] == 0.1
    assert entry["shift"][0]["scored on"] == "test/ folder (the official split)" and "ece" in entry["calibration"]

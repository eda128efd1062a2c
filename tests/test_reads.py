"""Reading sets (cxr_core.reads) and their numbers (cxr_core.reader_metrics): the draw, one submission per
session, the reader limit, malformed files, a reader's ROC point and curve against scikit-learn, the
majority vote, the model on the same images, and `python -m cxr_core reads`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from cxr_core import reader_metrics, reads
from cxr_core.config import UserError
from cxr_core.store import RunStore

# A hand-made reader: six images, truth and answers with confidences.
TRUTH = [1, 1, 1, 0, 0, 0]
ANSWERS = ["PNEUMONIA", "PNEUMONIA", "NORMAL", "PNEUMONIA", "NORMAL", "NORMAL"]
CONFIDENCES = [5, 2, 3, 1, 4, 2]


def answers(calls, confidence=3):
    return [{"answer": call, "confidence": confidence} for call in calls]


def test_a_readers_point_and_curve_agree_with_sklearn_on_a_hand_made_case():
    result = reader_metrics.reader_metrics(TRUTH, ANSWERS, CONFIDENCES)
    scores = [10, 7, 3, 6, 2, 4]  # PNEUMONIA at confidence c scores 5 + c, NORMAL scores 6 - c
    assert reader_metrics.reader_scores(ANSWERS, CONFIDENCES).tolist() == scores
    called = [a == "PNEUMONIA" for a in ANSWERS]
    assert result["confusion_matrix"] == confusion_matrix(TRUTH, called, labels=[0, 1]).tolist() == [[2, 1], [1, 2]]
    assert result["sensitivity"] == pytest.approx(2 / 3) and result["specificity"] == pytest.approx(2 / 3)
    assert result["roc_point"] == pytest.approx({"fpr": 1 / 3, "tpr": 2 / 3})
    fpr, tpr, _ = roc_curve(TRUTH, scores, drop_intermediate=False)
    assert result["roc"] == {"fpr": pytest.approx(fpr.tolist()), "tpr": pytest.approx(tpr.tolist())}
    assert result["auc"] == pytest.approx(roc_auc_score(TRUTH, scores))
    # The call is the curve at 5.5: the point is one of the curve's vertices.
    assert any(np.isclose(f, 1 / 3) and np.isclose(t, 2 / 3) for f, t in zip(fpr, tpr))


def test_pneumonia_to_everything_is_sensitivity_one_and_specificity_zero():
    result = reader_metrics.reader_metrics(TRUTH, ["PNEUMONIA"] * 6, [3] * 6)
    assert result["sensitivity"] == 1.0 and result["specificity"] == 0.0 and result["auc"] == 0.5


def test_the_majority_vote_and_its_tie_rule():
    truth = [1, 0, 1]
    vote = reader_metrics.majority_vote(truth, [["PNEUMONIA", "NORMAL", "NORMAL"], ["PNEUMONIA", "PNEUMONIA", "NORMAL"]],
                                        [[3, 5, 1], [3, 1, 5]])
    # Image 2: one vote each, mean score (1 + 6) / 2 = 3.5 -> NORMAL. Image 3: (5 + 1) / 2 = 3 -> NORMAL.
    assert vote["confusion_matrix"] == [[1, 0], [1, 1]] and vote["readers"] == 2
    assert reader_metrics.majority_vote(truth, [], []) is None


def test_the_model_beside_the_readers_reads_its_curve():
    model = {"roc": {"fpr": [0.0, 0.0, 0.5, 1.0], "tpr": [0.0, 0.5, 1.0, 1.0]}}
    assert reader_metrics.specificity_at(model, 0.5) == 1.0 and reader_metrics.specificity_at(model, 0.9) == 0.5
    rows = [{"sensitivity": 1.0, "specificity": 0.6}, {"sensitivity": 1.0, "specificity": 0.4}]
    said = reader_metrics.findings(rows, {"sensitivity": 1.0, "specificity": 0.7}, model)
    assert said[0] == "1 of 2 readers beat the model's specificity at their own sensitivity."
    assert "+0.20 in specificity from the model" in said[1]


# ---------------------------------------------------------------- sets on disk


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def test_a_set_is_drawn_by_seed_at_the_mix_asked_from_the_official_test_split(demo_dir, store):
    first = reads.create_set(demo_dir, store, images=10, seed=7, pneumonia_share=0.3)
    again = reads.create_set(demo_dir, store, images=10, seed=7, pneumonia_share=0.3)
    assert first["images"] == again["images"] and first["id"] != again["id"]
    assert sum(i["truth"] for i in first["images"]) == 3 and len(first["images"]) == 10
    assert all(i["path"].startswith("test/") for i in first["images"]) and first["drawn_from"] == "official test split"
    assert [s["id"] for s in reads.list_sets(store)] == [again["id"], first["id"]]
    assert reads.get_set(first["id"], store) == first
    with pytest.raises(UserError, match="fewer than"):
        reads.create_set(demo_dir, store, images=190, seed=1)


def test_one_submission_per_session_and_a_closed_set_takes_none(demo_dir, store, monkeypatch):
    reading_set = reads.create_set(demo_dir, store, images=4, seed=1)
    reads.submit(reading_set["id"], store, "session-a", "  <b>Ada</b>\n ", answers(["NORMAL"] * 4))
    with pytest.raises(UserError, match="already submitted"):
        reads.submit(reading_set["id"], store, "session-a", "again", answers(["PNEUMONIA"] * 4))
    with pytest.raises(UserError, match="all 4 images"):
        reads.submit(reading_set["id"], store, "session-b", "", answers(["NORMAL"] * 3))
    with pytest.raises(UserError, match="confidence from 1 to 5"):
        reads.submit(reading_set["id"], store, "session-b", "", answers(["NORMAL"] * 4, confidence=6))
    monkeypatch.setattr(reads, "MAX_READERS", 2)
    reads.submit(reading_set["id"], store, "session-b", "x" * 60, answers(["PNEUMONIA"] * 4))
    with pytest.raises(UserError, match="already holds 2 readers"):
        reads.submit(reading_set["id"], store, "session-c", "", answers(["NORMAL"] * 4))
    stored = reads.readers(reading_set, store)
    assert [r["name"] for r in stored] == ["<b>Ada</b>", "x" * 40]  # one line, 40 characters; escaped where shown
    assert "session-a" not in json.dumps(stored)
    reads.close_set(reading_set["id"], store)
    monkeypatch.setattr(reads, "MAX_READERS", 300)
    with pytest.raises(UserError, match="closed"):
        reads.submit(reading_set["id"], store, "session-d", "", answers(["NORMAL"] * 4))
    reads.delete_set(reading_set["id"], store)
    assert reads.list_sets(store) == [] and not any(reads.sets_dir(store).iterdir())


def test_malformed_files_are_skipped_with_a_warning(demo_dir, store):
    reading_set = reads.create_set(demo_dir, store, images=4, seed=1)
    reads.submit(reading_set["id"], store, "s", "", answers(["NORMAL"] * 4))
    folder = reads.set_path(reading_set["id"], store)
    (folder / "readers" / "broken.json").write_text("{not json")
    (folder / "readers" / "short.json").write_text(json.dumps({"answers": answers(["NORMAL"])}))
    broken_set = reads.sets_dir(store) / "20260101-000000-abcd"
    broken_set.mkdir()
    (broken_set / "set.json").write_text("[]")
    heard = []
    assert len(reads.readers(reading_set, store, warn=heard.append)) == 1
    assert [s["id"] for s in reads.list_sets(store, warn=heard.append)] == [reading_set["id"]]
    assert len(heard) == 3 and all(m.startswith("skipped") for m in heard)


def test_the_model_side_is_the_runs_stored_predictions_on_the_same_images(tiny_run, demo_dir, tmp_path):
    source, run_id = tiny_run
    store = RunStore(tmp_path / "runs")
    shutil.copytree(source.run_path(run_id), store.root / run_id)
    reading_set = reads.create_set(demo_dir, store, images=10, seed=7)
    reads.submit(reading_set["id"], store, "s1", "all pneumonia", answers(["PNEUMONIA"] * 10))
    result = reader_metrics.report(reading_set, store)
    model = result["model"]
    assert model["run"] == run_id and model["source"] == "own"
    stored = pd.read_csv(store.run_path(run_id) / "predictions_test.csv").set_index("path")["probability"]
    probabilities = [stored[i["path"]] for i in reading_set["images"]]
    truth = [i["truth"] for i in reading_set["images"]]
    assert model["probabilities"] == pytest.approx(probabilities)
    assert model["auc"] == pytest.approx(roc_auc_score(truth, probabilities))
    assert model["threshold"] == store.get(run_id).evaluation("test")["threshold"]
    (reader,) = result["readers"]
    assert (reader["name"], reader["sensitivity"], reader["specificity"]) == ("all pneumonia", 1.0, 0.0)
    assert len(result["findings"]) == 2
    assert reader_metrics.model_side(reading_set, RunStore(tmp_path / "no_runs")) is None


# ---------------------------------------------------------------- the command line


def test_reads_from_the_command_line(demo_dir, tmp_path, cli):
    runs = tmp_path / "runs"
    made = cli("reads", "new", "--images", 6, "--seed", 3, "--data", demo_dir, "--runs", runs)
    assert made.returncode == 0, made.stderr
    set_id = made.stdout.strip().splitlines()[-1]
    store = RunStore(runs)
    reading_set = reads.get_set(set_id, store)
    calls = ["PNEUMONIA" if i % 2 else "NORMAL" for i in range(6)]
    reads.submit(set_id, store, "s", "Ada", answers(calls, confidence=4))
    listed = json.loads(cli("reads", "--runs", runs, "--json").stdout)
    assert [(s["id"], s["images"], s["readers"]) for s in listed] == [(set_id, 6, 1)]
    shown = cli("reads", set_id, "--json", "--csv", tmp_path / "answers.csv", "--runs", runs)
    assert shown.returncode == 0, shown.stderr
    printed = json.loads(shown.stdout)
    (reader,) = printed["readers"]
    expected = reader_metrics.reader_metrics([i["truth"] for i in reading_set["images"]], calls, [4] * 6)
    assert reader["name"] == "Ada" and reader["n"] == 6
    assert (reader["sensitivity"], reader["specificity"]) == (expected["sensitivity"], expected["specificity"])
    assert [a["answer"] for a in reader["answers"]] == calls and reader["answers"][0]["confidence"] == 4
    rows = pd.read_csv(tmp_path / "answers.csv")
    assert rows["answer"].tolist() == calls and set(rows["truth"]) <= {"NORMAL", "PNEUMONIA"}
    assert cli("reads", "close", set_id, "--runs", runs).returncode == 0
    assert reads.get_set(set_id, store)["state"] == "closed"
    refused = cli("reads", "nonsense", "--runs", runs)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "invalid reading set id" in refused.stderr
    assert cli("reads", "delete", set_id, "--runs", runs).returncode == 0
    assert "no reading sets yet" in cli("reads", "--runs", runs).stdout

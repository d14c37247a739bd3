"""The promotion rule, the champion/challenger comparison on real bundles and datasets,
its report and its MLflow run."""

from __future__ import annotations

import json

import pytest
from retrain_support import add_feedback, held_out_digits, prepare_digits, train_champion

from imgclass.feedback.promotion import (
    compare,
    decide,
    score,
    sign_test,
    track_comparison,
    write_report,
)
from mlflow_support import fresh_store


def test_promotes_within_tolerance_when_feedback_improves():
    d = decide(0.950, 0.946, 0.60, 0.70, 40, tolerance=0.5)
    assert d.promote and abs(d.drop - 0.4) < 1e-9 and abs(d.gain - 10) < 1e-9
    assert "drop 0.40 <= 0.5 points" in d.reasons[0]
    assert decide(0.950, 0.945, 0.60, 0.61, 40).promote  # exactly the tolerance
    assert decide(0.90, 0.95, 0.60, 0.61, 40).promote  # a gain is no drop


def test_refuses_a_drop_over_the_tolerance():
    d = decide(0.950, 0.940, 0.60, 0.90, 40, tolerance=0.5)
    assert not d.promote
    assert d.reasons == (
        "original-test accuracy dropped 1.00 points (95.00% -> 94.00%), more than the "
        "tolerance of 0.5",
    )
    assert decide(0.950, 0.940, 0.60, 0.90, 40, tolerance=1.0).promote


def test_refuses_when_feedback_does_not_improve():
    d = decide(0.95, 0.95, 0.70, 0.70, 40)
    assert not d.promote and "feedback accuracy did not improve (70.00% -> 70.00%" in d.reasons[0]
    assert not decide(0.95, 0.96, 0.70, 0.65, 40).promote
    both = decide(0.95, 0.90, 0.70, 0.60, 40)
    assert len(both.reasons) == 2  # every reason is given


def test_refuses_without_held_out_feedback():
    d = decide(0.95, 0.96, 0.0, 0.0, 0)
    assert not d.promote
    assert d.reasons == (
        "there is no held-out feedback to judge the challenger on (accept more feedback)",
    )


def test_scores_compare_label_names():
    s = score(["cat", "dog", "dog", "owl"], ["cat", "cat", "dog", "owl"])
    assert s.accuracy == 0.75 and s.n == 4
    assert s.per_class == {
        "cat": {"n": 2, "accuracy": 0.5},
        "dog": {"n": 1, "accuracy": 1.0},
        "owl": {"n": 1, "accuracy": 1.0},
    }


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two real bundles (one epoch and four) on digits 0-7, and held-out feedback."""
    from imgclass.feedback.dataset_export import export_feedback
    from imgclass.feedback.store import FeedbackStore

    root = tmp_path_factory.mktemp("promotion")
    data = prepare_digits(root / "digits", "0,1,2,3,4,5,6,7")
    weak = train_champion(data, root / "weak", epochs=1)
    strong = train_champion(data, root / "strong", epochs=4)
    images, labels = held_out_digits(100, classes=tuple(range(9)))
    add_feedback(root / "fb.sqlite3", images, labels)
    with FeedbackStore.from_path_or_url(root / "fb.sqlite3") as store:
        feedback = export_feedback(store, root / "feedback", bundle=weak, test_fraction=0.5)
    return data, weak, strong, feedback


def test_compare_reports_and_tracks(pair, tmp_path):
    data, weak, strong, feedback = pair
    same = compare(weak, weak, data, feedback)
    assert not same.decision.promote and same.decision.drop == 0
    c = compare(weak, strong, data, feedback, tolerance=0.5)
    n_fb = c.challenger["feedback_test"].n
    assert c.champion["original_test"].n == 240 and 0 < n_fb < 100
    assert "8" in c.champion["feedback_test"].per_class  # a label neither model knows
    assert c.champion["feedback_test"].per_class["8"]["accuracy"] == 0.0
    report = write_report(c, tmp_path / "report")
    saved = json.loads((report / "comparison.json").read_text())
    assert saved["decision"]["promote"] == c.decision.promote
    changes = saved["per_class_changes"]["original_test"]
    assert set(changes) == set("01234567")
    row = changes["3"]
    assert abs(row["change"] - (row["after"] - row["before"])) < 1e-12
    md = (report / "comparison.md").read_text()
    assert "| original test | 240 |" in md and "## Per class: feedback test" in md
    assert (report / "per_class_changes.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in report.iterdir()) == [
        "comparison.json",
        "comparison.md",
        "per_class_changes.png",
    ]
    uri = fresh_store(tmp_path / "mlflow.db")
    run_id, _ = track_comparison(c, report, uri=uri, experiment="t", params={"epochs": 3})
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "3"
    accuracy = c.challenger["original_test"].accuracy
    assert run.data.metrics["challenger_original_test_accuracy"] == pytest.approx(accuracy)
    assert run.data.metrics["promoted"] == float(c.decision.promote)
    names = {f.path for f in client.list_artifacts(run_id, "comparison")}
    assert "comparison/per_class_changes.png" in names


def test_sign_test_matches_the_binomial_tail():
    from scipy.stats import binomtest

    for fixed, broken in ((0, 0), (5, 0), (7, 3), (3, 7), (30, 12), (60, 58)):
        expected = (
            binomtest(fixed, fixed + broken, 0.5, alternative="greater").pvalue
            if fixed + broken
            else 1.0
        )
        assert abs(sign_test(fixed, broken) - expected) < 1e-12


def test_a_gain_that_may_be_luck_is_refused():
    # 2 points better on 100 held-out submissions: 6 fixed, 4 broken. Noise.
    d = decide(0.95, 0.95, 0.40, 0.42, 100, discordant=(6, 4), alpha=0.05)
    assert not d.promote and d.p_value is not None and d.p_value > 0.3
    assert "may be luck" in d.reasons[0] and "6" in d.reasons[0]
    # The same accuracies with alpha 0 only ask for a gain.
    assert decide(0.95, 0.95, 0.40, 0.42, 100, discordant=(6, 4), alpha=0).promote
    # A real gain passes and says how sure it is.
    d = decide(0.95, 0.95, 0.0, 0.68, 124, discordant=(85, 0), alpha=0.05)
    assert d.promote and d.p_value is not None and d.p_value < 1e-20 and "p = " in d.reasons[0]

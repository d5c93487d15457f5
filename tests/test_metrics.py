"""Metrics checked against hand-computed values (not against sklearn re-called in the test)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from iein.evaluation.metrics import (
    classification_scores,
    correction_counts,
    evaluate_steps,
    format_mean_std,
    format_report,
    mean_std,
)

LABELS = ["neutral", "joy", "anger"]
#          idx:   0  1  2  3  4  5
GOLD = np.array([0, 0, 0, 1, 1, 2])
PRED = np.array([0, 0, 1, 1, 2, 2])


def test_weighted_f1_hand_computed() -> None:
    # neutral: TP=2 FP=0 FN=1 (idx2)       -> P=1   R=2/3 F1=2*(2/3)/(5/3) = 0.8
    # joy:     TP=1 FP=1 (idx2) FN=1 (idx4) -> P=1/2 R=1/2 F1=0.5
    # anger:   TP=1 FP=1 (idx4) FN=0        -> P=1/2 R=1   F1=2*(1/2)/(3/2) = 2/3
    # supports 3, 2, 1 -> weighted F1 = (3*0.8 + 2*0.5 + 1*2/3) / 6 = 4.0667/6 = 0.67778
    # accuracy: 4 of 6 right (idx 0, 1, 3, 5)
    s = classification_scores(GOLD, PRED, LABELS)
    assert s["weighted_f1"] == pytest.approx(100 * (2.4 + 1.0 + 2 / 3) / 6)
    assert s["weighted_f1"] == pytest.approx(67.7778, abs=1e-4)
    assert s["accuracy"] == pytest.approx(100 * 4 / 6)
    assert s["per_class_f1"] == pytest.approx({"neutral": 80.0, "joy": 50.0, "anger": 200 / 3})
    assert s["support"] == {"neutral": 3, "joy": 2, "anger": 1}
    assert s["n"] == 6
    assert "micro_f1_excl" not in s
    json.dumps(s)  # plain Python types only


def test_confusion_matrix_rows_are_gold_columns_are_predicted() -> None:
    # A single asymmetric error makes the orientation unambiguous:
    # one gold "neutral" predicted as "anger" must land in row neutral, column anger.
    s = classification_scores([0, 1, 2], [2, 1, 2], LABELS)
    assert s["confusion_matrix"] == [[0, 0, 1], [0, 1, 0], [0, 0, 1]]
    s = classification_scores(GOLD, PRED, LABELS)
    assert s["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_micro_f1_excluding_majority_class() -> None:
    # Excluding "neutral", pool TP/FP/FN over joy+anger only:
    #   TP = 2 (idx3 joy, idx5 anger)
    #   FP = 2 (idx2 neutral->joy, idx4 joy->anger)
    #   FN = 1 (idx4 gold joy missed)
    # micro F1 = 2TP / (2TP + FP + FN) = 4/7 = 57.14%
    s = classification_scores(GOLD, PRED, LABELS, exclude=["neutral"])
    assert s["micro_f1_excl"] == pytest.approx(400 / 7)
    assert s["excluded"] == ["neutral"]
    # The other metrics still include the excluded class.
    assert s["weighted_f1"] == pytest.approx(67.7778, abs=1e-4)


def test_micro_f1_excl_predicting_excluded_class_is_a_miss_not_a_false_alarm() -> None:
    # gold joy predicted neutral: FN=1; gold neutral predicted neutral: ignored.
    # TP=1 (idx2), FP=0, FN=1 -> 2/(2+0+1) = 2/3
    s = classification_scores([1, 0, 2], [0, 0, 2], LABELS, exclude=["neutral"])
    assert s["micro_f1_excl"] == pytest.approx(200 / 3)


def test_absent_class_is_still_reported() -> None:
    s = classification_scores([0, 0], [0, 0], LABELS)
    assert s["per_class_f1"] == {"neutral": 100.0, "joy": 0.0, "anger": 0.0}
    assert s["support"] == {"neutral": 2, "joy": 0, "anger": 0}
    assert s["weighted_f1"] == pytest.approx(100.0)  # zero-support classes weigh nothing
    assert np.array(s["confusion_matrix"]).shape == (3, 3)


@pytest.mark.parametrize(
    "gold, pred, labels, exclude",
    [
        ([0, 1], [0], LABELS, ()),  # length mismatch
        ([0, 3], [0, 1], LABELS, ()),  # id out of range
        ([0, -1], [0, 1], LABELS, ()),  # negative id
        ([0.0, 1.0], [0, 1], LABELS, ()),  # floats, not ids
        ([[0.9, 0.1, 0.0]], [0], LABELS, ()),  # probabilities
        ([], [], LABELS, ()),  # nothing to score
        ([0], [0], LABELS, ["sad"]),  # unknown excluded label
        ([0], [0], ["a", "a"], ()),  # duplicate label names
    ],
)
def test_bad_input_is_rejected(gold, pred, labels, exclude) -> None:
    with pytest.raises(ValueError):
        classification_scores(gold, pred, labels, exclude)


def test_correction_counts_all_three_kinds() -> None:
    gold = [0, 1, 2, 0, 1, 2]
    prev = [0, 1, 0, 1, 2, 2]
    nxt = [1, 1, 2, 2, 2, 0]
    # idx0: right 0 -> wrong 1       R->W
    # idx1: unchanged (right)
    # idx2: wrong 0 -> right 2       W->R
    # idx3: wrong 1 -> wrong 2       W->W
    # idx4: unchanged (wrong)
    # idx5: right 2 -> wrong 0       R->W
    c = correction_counts(prev, nxt, gold)
    assert c == {
        "R->W": 2, "W->R": 1, "W->W": 1, "changed": 4,
        "R->W%": 50.0, "W->R%": 25.0, "W->W%": 25.0,
    }


def test_correction_counts_no_change() -> None:
    c = correction_counts([0, 1, 2], [0, 1, 2], [0, 0, 0])
    assert c == {
        "R->W": 0, "W->R": 0, "W->W": 0, "changed": 0,
        "R->W%": 0.0, "W->R%": 0.0, "W->W%": 0.0,
    }


def test_correction_counts_length_mismatch() -> None:
    with pytest.raises(ValueError, match="length mismatch"):
        correction_counts([0, 1], [0, 1], [0])


def test_evaluate_steps() -> None:
    step0 = [0, 0, 0, 0, 0, 0]  # all neutral: 3/6 right
    step1 = PRED.tolist()  # 4/6 right
    r = evaluate_steps([step0, step1], GOLD, LABELS, exclude=["neutral"])
    assert r["final"] == classification_scores(GOLD, PRED, LABELS, exclude=["neutral"])
    assert [s["step"] for s in r["steps"]] == [0, 1]
    # step 0: only neutral has F1 = 2*(1/2*1)/(3/2) = 2/3, weight 3/6 -> 33.33
    assert r["steps"][0]["weighted_f1"] == pytest.approx(100 / 3)
    assert r["steps"][0]["accuracy"] == pytest.approx(50.0)
    assert r["steps"][0]["micro_f1_excl"] == pytest.approx(0.0)
    assert r["steps"][1]["weighted_f1"] == pytest.approx(67.7778, abs=1e-4)
    # 0->1 changes idx2 (right 0 -> wrong 1: R->W), idx3 (wrong 0 -> right 1: W->R),
    # idx4 (wrong 0 -> wrong 2: W->W), idx5 (wrong 0 -> right 2: W->R)
    (c,) = r["corrections"]
    assert (c["from"], c["to"]) == (0, 1)
    assert (c["R->W"], c["W->R"], c["W->W"], c["changed"]) == (1, 2, 1, 4)
    json.dumps(r)


def test_evaluate_steps_accepts_2d_array_and_single_step() -> None:
    r = evaluate_steps(np.stack([PRED]), GOLD, LABELS)
    assert r["corrections"] == []
    assert len(r["steps"]) == 1
    with pytest.raises(ValueError):
        evaluate_steps([], GOLD, LABELS)


def test_mean_std() -> None:
    assert mean_std([1, 2, 3]) == (2.0, 1.0)  # sample std: sqrt((1+0+1)/2) = 1
    assert mean_std([5.5]) == (5.5, 0.0)
    assert format_mean_std([59.0, 59.5, 58.86]) == "59.12 ± 0.34"
    assert format_mean_std([1, 2, 3], digits=1) == "2.0 ± 1.0"
    with pytest.raises(ValueError):
        mean_std([])


def test_format_report_contains_every_section() -> None:
    r = evaluate_steps([[0] * 6, PRED], GOLD, LABELS, exclude=["neutral"])
    text = format_report(r, LABELS)
    for needle in ["neutral", "joy", "anger", "67.78", "66.67", "57.14", "R->W", "W->R",
                   "W->W", "0->1", "Confusion matrix", "33.33"]:
        assert needle in text, needle
    # The confusion-matrix row of gold "neutral" reads 2 1 0.
    row = next(line for line in text.splitlines()[::-1] if line.startswith("neutral"))
    assert row.split()[1:] == ["2", "1", "0"]
    # A bare classification_scores result also renders, survives a JSON round trip.
    bare = json.loads(json.dumps(classification_scores(GOLD, PRED, LABELS)))
    assert "weighted F1: 67.78" in format_report(bare, LABELS)

"""utils.matching: IoU matching rules, proposal labels and the balanced sampler."""

import numpy as np
import pytest

from utils.matching import (
    BELOW_LOW_THRESHOLD,
    BETWEEN_THRESHOLDS,
    label_proposals,
    match_boxes,
    sample_balanced,
)


def test_thresholds_split_foreground_ignored_background():
    overlaps = np.array([[0.8, 0.5, 0.2, 0.0], [0.1, 0.6, 0.4, 0.0]])
    matches = match_boxes(overlaps, high_threshold=0.7, low_threshold=0.3)
    assert matches.tolist() == [0, BETWEEN_THRESHOLDS, BETWEEN_THRESHOLDS, BELOW_LOW_THRESHOLD]


def test_low_quality_matches_only_when_overlapping():
    # Ground truth 0 overlaps box 2 best (0.4 < 0.7); ground truth 1 touches nothing.
    overlaps = np.array([[0.1, 0.2, 0.4, 0.4], [0.0, 0.0, 0.0, 0.0]])
    matches = match_boxes(overlaps, 0.7, 0.3, allow_low_quality_matches=True)
    assert matches.tolist() == [BELOW_LOW_THRESHOLD, BELOW_LOW_THRESHOLD, 0, 0]  # ties both claimed
    assert (
        match_boxes(np.zeros((1, 5)), 0.7, 0.3, allow_low_quality_matches=True)
        == BELOW_LOW_THRESHOLD
    ).all()


def test_no_ground_truth_means_all_background():
    assert match_boxes(np.zeros((0, 3)), 0.5, 0.5).tolist() == [BELOW_LOW_THRESHOLD] * 3


def test_bad_thresholds():
    with pytest.raises(ValueError, match=r"low_threshold=0.8, high_threshold=0.5"):
        match_boxes(np.zeros((1, 1)), 0.5, 0.8)
    with pytest.raises(ValueError, match=r"overlaps has shape \(3,\)"):
        match_boxes(np.zeros(3), 0.5, 0.5)


def test_label_proposals_classes_and_targets():
    from utils.boxes import decode

    truth = np.array([[10, 10, 50, 50], [60, 60, 100, 100]], np.float32)
    classes = np.array([3, 0])
    proposals = np.array(
        [[12, 10, 50, 52], [60, 60, 98, 100], [0, 0, 8, 8], [10, 10, 30, 50]], np.float32
    )
    targets = label_proposals(proposals, truth, classes)
    assert targets.labels.tolist() == [4, 1, 0, 4]
    assert targets.matched_iou[3] == pytest.approx(0.5)  # exactly at the threshold: foreground
    foreground = targets.labels > 0
    recovered = np.asarray(
        decode(
            targets.regression_targets[foreground], proposals[foreground], weights=(10, 10, 5, 5)
        )
    )
    np.testing.assert_allclose(recovered, truth[targets.matched_index[foreground]], atol=1e-3)
    assert (targets.regression_targets[~foreground] == 0).all()


def test_label_proposals_without_ground_truth():
    targets = label_proposals(np.array([[0, 0, 5, 5]], np.float32), np.zeros((0, 4)), np.zeros(0))
    assert targets.labels.tolist() == [0] and targets.matched_iou.tolist() == [0.0]
    with pytest.raises(
        ValueError, match=r"ground_truth_boxes has 1 boxes and ground_truth_labels 2 labels"
    ):
        label_proposals(np.zeros((1, 4)), np.zeros((1, 4)), np.zeros(2))


def test_sampler_balance():
    rng = np.random.default_rng(0)
    labels = np.array([1] * 50 + [0] * 500 + [-1] * 20)
    chosen = sample_balanced(labels, 128, 0.25, rng)
    assert len(chosen) == 128 and len(set(chosen.tolist())) == 128
    assert (labels[chosen] > 0).sum() == 32 and (labels[chosen] == 0).sum() == 96
    few = np.array([2, 0, 0, -1])
    chosen = sample_balanced(few, 128, 0.25, rng)
    assert sorted(chosen.tolist()) == [0, 1, 2]  # everything usable, never the ignored one
    with pytest.raises(ValueError, match=r"foreground_fraction=1.5"):
        sample_balanced(few, 4, 1.5, rng)

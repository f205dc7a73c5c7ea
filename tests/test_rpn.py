"""utils.rpn: the RPN head, anchor targets, the sampler, the loss and the proposal layer."""

import numpy as np
import pytest
import tensorflow as tf

from utils.anchors import generate_anchors
from utils.boxes import decode, iou
from utils.matching import (
    BACKGROUND,
    BELOW_LOW_THRESHOLD,
    BETWEEN_THRESHOLDS,
    FOREGROUND,
    IGNORED,
    match_boxes,
)
from utils.rpn import ProposalLayer, RPNHead, assign_anchor_targets, rpn_loss, sample_anchors

ANCHORS = np.array(
    [
        [0, 0, 20, 20],  # the ground truth itself
        [0, 0, 20, 40],  # IoU 0.5: ignored
        [40, 0, 60, 20],  # far away: background
        [0, 10, 20, 30],  # IoU 1/3: ignored
    ],
    np.float32,
)


def _labels(anchors, boxes, labels=None):
    result, targets, matched = assign_anchor_targets(anchors, boxes, labels)
    return np.asarray(result), np.asarray(targets), np.asarray(matched)


def test_thresholds_and_regression_targets():
    labels, targets, matched = _labels(ANCHORS, np.array([[0, 0, 20, 20]], np.float32))
    assert labels.shape == (1, 4) and targets.shape == (1, 4, 4)
    assert labels[0].tolist() == [FOREGROUND, IGNORED, BACKGROUND, IGNORED]
    assert matched[0].tolist() == [0, 0, -1, 0]
    np.testing.assert_allclose(targets[0], 0.0, atol=1e-6)  # exact anchor: nothing to move


def test_best_anchor_is_positive_even_below_threshold():
    # Best IoU 0.5 < 0.7: the best anchor of the box still turns positive, and regresses onto it.
    box = np.array([[0, 0, 20, 40]], np.float32)
    anchors = ANCHORS[[0, 2]]
    labels, targets, _ = _labels(anchors, box)
    assert labels[0].tolist() == [FOREGROUND, BACKGROUND]
    np.testing.assert_allclose(decode(targets[0, :1], anchors[:1]), box, atol=1e-4)


def test_box_touching_no_anchor_makes_no_anchor_positive():
    far_box = np.array([[100, 100, 120, 120]], np.float32)
    labels, targets, matched = _labels(ANCHORS, far_box)
    assert labels[0].tolist() == [BACKGROUND] * 4
    assert (matched == -1).all() and (targets == 0).all()


def test_padding_rows_claim_nothing():
    boxes = np.array([[[40, 0, 60, 20], [0, 0, 20, 20]]], np.float32)  # row 1 is padding
    labels, _, _ = _labels(ANCHORS, boxes, np.array([[2, -1]]))
    assert labels[0].tolist() == [BACKGROUND, BACKGROUND, FOREGROUND, BACKGROUND]
    empty, _, _ = _labels(ANCHORS, np.zeros((1, 0, 4), np.float32), np.zeros((1, 0), np.int32))
    assert empty.tolist() == [[BACKGROUND] * 4]


def test_agrees_with_match_boxes_on_random_scenes():
    anchors = generate_anchors(8, 8, 8, (16, 32), (0.5, 1.0, 2.0))
    rng = np.random.default_rng(0)
    for _ in range(10):
        corners = rng.uniform(0, 50, (3, 2))
        boxes = np.concatenate([corners, corners + rng.uniform(4, 40, (3, 2))], 1)
        boxes = boxes.astype(np.float32)
        labels, _, matched = _labels(anchors, boxes)
        reference = match_boxes(iou(boxes, anchors), 0.7, 0.3, allow_low_quality_matches=True)
        expected = np.select(
            [reference >= 0, reference == BELOW_LOW_THRESHOLD, reference == BETWEEN_THRESHOLDS],
            [FOREGROUND, BACKGROUND, IGNORED],
        )
        np.testing.assert_array_equal(labels[0], expected)
        np.testing.assert_array_equal(matched[0][reference >= 0], reference[reference >= 0])


def test_assign_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="negative_iou=0.8, positive_iou=0.7"):
        assign_anchor_targets(ANCHORS, ANCHORS[:1], negative_iou=0.8)
    with pytest.raises(ValueError, match=r"boxes has shape \(4,\)"):
        assign_anchor_targets(ANCHORS, ANCHORS[0])


@pytest.mark.parametrize(
    ("positives", "negatives", "expected"),
    [(300, 1000, (128, 128)), (10, 1000, (10, 246)), (10, 20, (10, 20)), (0, 500, (0, 256))],
)
def test_sampler_balance(positives, negatives, expected):
    labels = np.full(1500, IGNORED, np.int32)
    labels[:positives] = FOREGROUND
    labels[positives : positives + negatives] = BACKGROUND
    labels = np.random.default_rng(1).permutation(labels)[None]
    sampled = np.asarray(sample_anchors(labels, 256, 0.5, seed=3))[0].astype(bool)
    assert (labels[0][sampled] != IGNORED).all()
    counts = (np.sum(labels[0][sampled] == FOREGROUND), np.sum(labels[0][sampled] == BACKGROUND))
    assert counts == expected


def test_sampler_draws_a_new_sample_per_call_with_a_seed_generator():
    import keras

    labels = np.zeros((2, 1000), np.int32)
    generator = keras.random.SeedGenerator(0)
    first = np.asarray(sample_anchors(labels, 64, seed=generator))
    second = np.asarray(sample_anchors(labels, 64, seed=generator))
    assert first.sum(axis=1).tolist() == [64, 64] and (first != second).any()


def test_loss_matches_a_hand_computation():
    logits = np.array([[2.0, -1.0, 0.5, 3.0]], np.float32)
    labels = np.array([[FOREGROUND, BACKGROUND, IGNORED, FOREGROUND]])
    sampled = np.array([[1.0, 1.0, 0.0, 0.0]], np.float32)  # anchor 3 is not in the sample
    deltas = np.zeros((1, 4, 4), np.float32)
    targets = np.zeros((1, 4, 4), np.float32)
    targets[0, 0] = [0.05, -1.0, 0.0, 0.0]
    targets[0, 3] = [9.0, 9.0, 9.0, 9.0]
    objectness, box = rpn_loss(logits, deltas, labels, targets, sampled)
    expected_bce = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0))) / 2
    beta = 1 / 9
    expected_box = (0.5 * 0.05**2 / beta + (1.0 - 0.5 * beta)) / 2
    assert float(objectness) == pytest.approx(expected_bce, rel=1e-5)
    assert float(box) == pytest.approx(expected_box, rel=1e-5)


def test_head_outputs_follow_the_anchor_order():
    head = RPNHead(num_anchors=6, channels=8)
    features = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    logits, deltas = head(features)
    assert tuple(logits.shape) == (2, 3 * 4 * 6) and tuple(deltas.shape) == (2, 72, 4)
    # Position (i, j), anchor a sits at row (i * W + j) * A + a, as generate_anchors orders them.
    raw = head.objectness(head.conv(features)).numpy()
    np.testing.assert_allclose(np.asarray(logits)[1, (2 * 4 + 1) * 6 + 5], raw[1, 2, 1, 5])
    assert head.count_params() == (3 * 3 * 5 * 8 + 8) + (8 * 6 + 6) + (8 * 24 + 24)
    with pytest.raises(ValueError, match="num_anchors=0"):
        RPNHead(0)


def _random_rpn_outputs(seed, count):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(2, count)).astype(np.float32)
    deltas = rng.normal(0.0, 0.5, size=(2, count, 4)).astype(np.float32)
    return logits, deltas


def test_proposals_are_inside_sorted_and_suppressed():
    anchors = generate_anchors(8, 8, 8, (16, 32, 64), (0.5, 1.0, 2.0))
    logits, deltas = _random_rpn_outputs(0, len(anchors))
    layer = ProposalLayer(pre_nms_top_n=300, post_nms_top_n=50, nms_threshold=0.7, min_size=2.0)
    boxes, scores, valid = (
        np.asarray(t) for t in layer(logits, deltas, anchors, image_size=(64, 64))
    )
    assert boxes.shape == (2, 50, 4) and scores.shape == (2, 50) and valid.shape == (2, 50)
    for image in range(2):
        kept = boxes[image][valid[image]]
        assert len(kept) > 0 and valid[image][: len(kept)].all()  # valid rows come first
        assert (kept >= 0).all() and (kept[:, [0, 2]] <= 64).all() and (kept[:, [1, 3]] <= 64).all()
        assert ((kept[:, 2] - kept[:, 0]) >= 2).all() and ((kept[:, 3] - kept[:, 1]) >= 2).all()
        kept_scores = scores[image][valid[image]]
        assert (np.diff(kept_scores) <= 0).all() and ((0 < kept_scores) & (kept_scores < 1)).all()
        overlaps = iou(kept, kept) - np.eye(len(kept))
        assert overlaps.max() <= 0.7 + 1e-6
        assert (boxes[image][~valid[image]] == 0).all() and (
            scores[image][~valid[image]] == 0
        ).all()


def test_proposals_keep_the_highest_scoring_anchor_and_pad():
    anchors = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40], [5, 5, 5.5, 30]])
    logits = np.array([[1.0, 3.0, 2.0, 5.0]], np.float32)  # the tiny box scores highest
    deltas = np.zeros((1, 4, 4), np.float32)
    layer = ProposalLayer(pre_nms_top_n=4, post_nms_top_n=3, nms_threshold=0.7, min_size=2.0)
    boxes, scores, valid = (
        np.asarray(t) for t in layer(logits, deltas, anchors, image_size=(50, 50))
    )
    # Tiny box dropped; anchor 0 overlaps anchor 1 (IoU 0.68 <= 0.7), so it survives.
    np.testing.assert_allclose(boxes[0], anchors[[1, 2, 0]])
    assert valid[0].tolist() == [True, True, True]
    np.testing.assert_allclose(scores[0], 1 / (1 + np.exp(-np.array([3.0, 2.0, 1.0]))), rtol=1e-6)
    strict = ProposalLayer(pre_nms_top_n=4, post_nms_top_n=3, nms_threshold=0.5, min_size=2.0)
    boxes, _, valid = (np.asarray(t) for t in strict(logits, deltas, anchors, image_size=(50, 50)))
    assert valid[0].tolist() == [True, True, False] and (boxes[0, 2] == 0).all()


def test_no_gradient_flows_through_proposals():
    anchors = generate_anchors(4, 4, 8, (16,), (1.0,))
    logits, deltas = (tf.constant(t) for t in _random_rpn_outputs(1, len(anchors)))
    layer = ProposalLayer(pre_nms_top_n=10, post_nms_top_n=5)
    with tf.GradientTape() as tape:
        tape.watch([logits, deltas])
        boxes, scores, _ = layer(logits, deltas, anchors, image_size=(32, 32))
        total = tf.reduce_sum(boxes) + tf.reduce_sum(scores)
    assert all(g is None for g in tape.gradient(total, [logits, deltas]))


def test_proposal_layer_checks_its_arguments():
    with pytest.raises(ValueError, match="post_nms_top_n=0"):
        ProposalLayer(post_nms_top_n=0)
    with pytest.raises(ValueError, match="nms_threshold=1.5"):
        ProposalLayer(nms_threshold=1.5)
    layer = ProposalLayer(pre_nms_top_n=5, post_nms_top_n=2)
    with pytest.raises(ValueError, match="anchors has 4 rows and objectness_logits 3 columns"):
        layer(
            np.zeros((1, 3), np.float32),
            np.zeros((1, 3, 4), np.float32),
            ANCHORS,
            image_size=(8, 8),
        )
    assert ProposalLayer.from_config(layer.get_config()).post_nms_top_n == 2

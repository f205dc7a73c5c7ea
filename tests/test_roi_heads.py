"""utils.roi_heads: the RoI head, its compiled form, RoI sampling, the loss and post-processing."""

import keras
import numpy as np
import pytest

from utils import boxes as box_ops
from utils.roi_heads import (
    BOX_WEIGHTS,
    MAX_DETECTIONS,
    NMS_THRESHOLD,
    SCORE_THRESHOLD,
    CompiledHead,
    FastRCNNHead,
    fast_rcnn_loss,
    postprocess_detections,
    roi_bucket,
    sample_rois,
    select_detections,
)

SIZE = 64
CLASSES = ("circle", "square", "triangle")


# ---- the head ---------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["roi_pool", "roi_align"])
def test_head_output_shapes_and_config(pooling):
    head = FastRCNNHead(4, pool_size=3, spatial_scale=0.25, hidden_units=(32, 16), pooling=pooling)
    features = np.random.default_rng(0).normal(size=(2, 8, 8, 5)).astype(np.float32)
    rois = np.array([[0, 0, 0, 16, 16], [1, 4, 4, 30, 20], [1, 0, 0, 32, 32]], np.float32)
    class_logits, box_deltas = head(features, rois)
    assert tuple(class_logits.shape) == (3, 5) and tuple(box_deltas.shape) == (3, 16)
    assert tuple(head.roi_pool(features, rois).shape) == (3, 3, 3, 5)
    # fc1 sees 3 x 3 bins x 5 channels; the two sibling layers sit on fc2.
    assert [w.shape for w in head.trainable_weights[::2]] == [(45, 32), (32, 16), (16, 5), (16, 16)]
    clone = FastRCNNHead.from_config(head.get_config())
    assert clone.pool_size == (3, 3) and clone.pooling == pooling and clone.spatial_scale == 0.25


def test_head_output_shape_does_not_depend_on_the_roi_size():
    head = FastRCNNHead(2, spatial_scale=0.5, pool_size=2, hidden_units=(8,))
    features = np.ones((1, 16, 16, 3), np.float32)
    small, large = (
        np.array([[0, 0, 0, 4, 4]], np.float32),
        np.array([[0, 0, 0, 30, 24]], np.float32),
    )
    assert (
        head.roi_pool(features, small).shape == head.roi_pool(features, large).shape == (1, 2, 2, 3)
    )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_classes": 0}, "num_classes=0"),
        ({"hidden_units": (8, 0)}, "hidden_units=0"),
        ({"hidden_units": (8, np.int64(4))}, None),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"pooling": "spp"}, "pooling='spp'"),
        ({"pool_size": 0}, "pool_size"),
        ({"spatial_scale": -1.0}, "spatial_scale"),
    ],
)
def test_head_bad_arguments(options, message):
    arguments = {"num_classes": 2, "spatial_scale": 0.25, **options}
    if message is None:
        assert FastRCNNHead(**arguments).hidden_units == (8, 4)
        return
    with pytest.raises(ValueError, match=message):
        FastRCNNHead(**arguments)


# ---- the loss ---------------------------------------------------------------------------


def test_loss_by_hand():
    # Two classes (K = 2): one class-2 RoI, one background RoI, one padding row.
    labels = np.array([2, 0, -1])
    targets = np.array([[0.5, -2.0, 0.0, 0.0], [0, 0, 0, 0], [9, 9, 9, 9]], np.float32)
    logits = np.array([[0.0, 0.0, np.log(2.0)], [np.log(3.0), 0.0, 0.0], [5, 5, 5]], np.float32)
    deltas = np.zeros((3, 8), np.float32)
    deltas[0, 4:] = [0.0, 0.0, 0.25, 0.0]  # class 2's deltas; class 1's stay 0
    deltas[1] = 7.0  # a background RoI's deltas never count
    losses = fast_rcnn_loss(labels, targets, logits, deltas)
    class_loss = (-np.log(2 / 4) - np.log(3 / 5)) / 2
    # smooth L1 (beta 1) of |0 - 0.5|, |0 + 2|, |0.25 - 0|, |0 - 0|, over 2 valid RoIs.
    box_loss = (0.5 * 0.5**2 + (2 - 0.5) + 0.5 * 0.25**2) / 2
    np.testing.assert_allclose(float(losses["class_loss"]), class_loss, rtol=1e-5)
    np.testing.assert_allclose(float(losses["box_loss"]), box_loss, rtol=1e-5)
    np.testing.assert_allclose(float(losses["loss"]), class_loss + box_loss, rtol=1e-5)
    weighted = fast_rcnn_loss(labels, targets, logits, deltas, box_loss_weight=2.0)
    np.testing.assert_allclose(float(weighted["loss"]), class_loss + 2 * box_loss, rtol=1e-5)


def test_loss_takes_batched_shapes_and_all_padding_is_zero():
    labels = np.full((2, 3), -1)
    losses = fast_rcnn_loss(
        labels, np.ones((2, 3, 4)), np.ones((2, 3, 4), np.float32), np.ones((2, 3, 12), np.float32)
    )
    assert float(losses["loss"]) == 0.0


# ---- RoI sampling -----------------------------------------------------------------------


def test_sample_rois_adds_ground_truth_balances_and_pads(one_image):
    data, proposals = one_image
    truth, classes = data.boxes[0], data.labels[0]
    sample = sample_rois(
        proposals,
        truth,
        classes,
        num_samples=16,
        foreground_fraction=0.25,
        rng=np.random.default_rng(1),
    )
    assert sample.boxes.shape == (16, 4) and sample.regression_targets.shape == (16, 4)
    assert sample.labels.dtype == np.int32 and sample.labels.shape == (16,)
    assert (sample.labels > 0).sum() == 4 and (sample.labels == 0).sum() == 12
    assert (sample.ious[sample.labels > 0] >= 0.5).all() and (
        sample.ious[sample.labels == 0] < 0.5
    ).all()
    # Only the ground truth itself: all foreground when allowed, then padding.
    only_truth = sample_rois(
        np.zeros((0, 4)),
        truth,
        classes,
        num_samples=8,
        foreground_fraction=1.0,
        rng=np.random.default_rng(0),
    )
    count = len(truth)
    np.testing.assert_array_equal(np.sort(only_truth.labels[:count]), np.sort(classes + 1))
    assert (only_truth.labels[count:] == -1).all() and (only_truth.boxes[count:] == 0).all()
    np.testing.assert_allclose(only_truth.regression_targets[:count], 0, atol=1e-5)


def test_sample_rois_bad_arguments(one_image):
    data, proposals = one_image
    with pytest.raises(ValueError, match="num_samples=0"):
        sample_rois(
            proposals, data.boxes[0], data.labels[0], num_samples=0, rng=np.random.default_rng(0)
        )
    with pytest.raises(ValueError, match="foreground_fraction=1.5"):
        options = {"num_samples": 8, "foreground_fraction": 1.5, "rng": np.random.default_rng(0)}
        sample_rois(proposals, data.boxes[0], data.labels[0], **options)


def test_roi_buckets_waste_at_most_a_third():
    assert [roi_bucket(n) for n in (0, 1, 32, 33, 48, 49, 65, 97, 129, 200)] == [
        32, 32, 32, 48, 48, 64, 96, 128, 192, 256,
    ]  # fmt: skip
    for count in range(1, 3000, 7):
        bucket = roi_bucket(count)
        assert count <= bucket and (bucket <= 32 or (bucket - count) / bucket < 1 / 3)


@pytest.mark.parametrize("count", [0, 1, 32, 33, 50])
def test_compiled_head_equals_the_head(one_image, count):
    """Padding to a bucket and XLA change nothing but speed: same rows, same numbers."""
    data, proposals = one_image
    keras.utils.set_random_seed(0)
    head = FastRCNNHead(3, spatial_scale=0.25, pool_size=2, hidden_units=(16,))
    features = np.random.default_rng(0).normal(size=(1, 16, 16, 8)).astype(np.float32)
    head.build(features.shape, (None, 5))
    boxes = np.resize(proposals, (count, 4))
    rois = np.concatenate([np.zeros((count, 1), np.float32), boxes], axis=1)
    probabilities, deltas = CompiledHead(head)(features, rois)
    logits, expected_deltas = head(features, rois, training=False)
    assert isinstance(probabilities, np.ndarray) and probabilities.shape == (count, 4)
    np.testing.assert_allclose(probabilities, keras.ops.softmax(logits), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(deltas, expected_deltas, rtol=1e-4, atol=1e-6)


# ---- post-processing ----------------------------------------------------------------------


def test_postprocess_thresholds_decodes_and_suppresses_per_class():
    proposals = np.array(
        [[10, 10, 50, 50], [12, 12, 52, 52], [10, 10, 50, 50], [60, 60, 140, 90]], np.float32
    )
    probabilities = np.array(
        [
            [0.1, 0.9, 0.0],  # class 0
            [0.2, 0.8, 0.0],  # class 0, overlaps the first: suppressed
            [0.3, 0.0, 0.7],  # class 1 on the same box: another class, kept
            [0.97, 0.02, 0.01],  # below the score threshold
        ],
        np.float32,
    )
    deltas = np.zeros((4, 8), np.float32)
    detections = postprocess_detections(probabilities, deltas, proposals, (100, 120))
    boxes, labels, scores = detections
    np.testing.assert_allclose(scores, [0.9, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(labels, [0, 1])
    np.testing.assert_allclose(boxes, proposals[[0, 2]], atol=1e-4)
    # A delta moves the box; the box is clipped to the image.
    deltas[3, 4:8] = [10 * 0.5, 0, 0, 0]  # class 1, shift right by half the width (40 px)
    probabilities[3] = [0.0, 0.0, 1.0]
    boxes, labels, scores = postprocess_detections(probabilities, deltas, proposals, (100, 120))
    np.testing.assert_allclose(boxes[0], [100, 60, 120, 90], atol=1e-3)


def _postprocess_class_by_class(probabilities, deltas, proposals, image_size):
    """The textbook form: for each class decode, clip, threshold and NMS; then top 100."""
    kept = []
    for label in range(probabilities.shape[1] - 1):
        scores = probabilities[:, label + 1]
        keep = scores > SCORE_THRESHOLD
        boxes = box_ops.decode(
            deltas[keep, 4 * label : 4 * label + 4], proposals[keep], weights=BOX_WEIGHTS
        )
        boxes = box_ops.clip(boxes, *image_size)
        large = ((boxes[:, 2] - boxes[:, 0]) >= 1e-2) & ((boxes[:, 3] - boxes[:, 1]) >= 1e-2)
        for index in box_ops.nms(boxes[large], scores[keep][large], NMS_THRESHOLD):
            kept.append((scores[keep][large][index], label, boxes[large][index]))
    kept.sort(key=lambda entry: -entry[0])
    return kept[:MAX_DETECTIONS]


@pytest.mark.parametrize("seed", range(5))
def test_postprocess_equals_class_by_class_nms(seed):
    """One offset NMS over all classes keeps exactly what per-class NMS keeps, in order."""
    rng = np.random.default_rng(seed)
    count, num_classes, image_size = 300, 5, (90, 120)
    corners = rng.uniform(0, 100, (count, 2))
    proposals = np.concatenate([corners, corners + rng.uniform(4, 40, (count, 2))], axis=1)
    probabilities = rng.dirichlet(np.full(num_classes + 1, 0.3), count).astype(np.float32)
    deltas = rng.normal(0, 1, (count, 4 * num_classes)).astype(np.float32)
    proposals = proposals.astype(np.float32)
    boxes, labels, scores = postprocess_detections(probabilities, deltas, proposals, image_size)
    expected = _postprocess_class_by_class(probabilities, deltas, proposals, image_size)
    assert len(scores) == len(expected) == MAX_DETECTIONS
    np.testing.assert_array_equal(scores, [entry[0] for entry in expected])
    np.testing.assert_array_equal(labels, [entry[1] for entry in expected])
    np.testing.assert_allclose(boxes, [entry[2] for entry in expected], atol=1e-4)


def test_postprocess_with_nothing_above_threshold_is_empty():
    probabilities = np.array([[1.0, 0.0, 0.0]], np.float32)
    boxes, labels, scores = postprocess_detections(
        probabilities, np.zeros((1, 8)), np.array([[0, 0, 5, 5]]), (10, 10)
    )
    assert boxes.shape == (0, 4) and labels.shape == (0,) and scores.shape == (0,)
    assert boxes.dtype == np.float32 and labels.dtype == np.int64 and scores.dtype == np.float32


def test_loss_reports_the_accuracy_of_the_valid_rois():
    labels = np.array([2, 0, -1])
    logits = np.array([[0, 0, 5], [0, 5, 0], [5, 0, 0]], np.float32)  # right, wrong, padding
    losses = fast_rcnn_loss(labels, np.zeros((3, 4)), logits, np.zeros((3, 8), np.float32))
    assert float(losses["accuracy"]) == 0.5


def test_postprocess_drops_boxes_that_clipping_leaves_empty():
    proposals = np.array([[10, 10, 30, 30], [200, 10, 240, 30]], np.float32)  # the second is off
    probabilities = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
    boxes, labels, scores = postprocess_detections(
        probabilities, np.zeros((2, 4)), proposals, (64, 64)
    )
    np.testing.assert_allclose(boxes, proposals[:1])


def test_postprocess_bad_shapes_say_what_was_expected():
    with pytest.raises(ValueError, match=r"deltas has shape \(2, 4\): expected \[2, 8\]"):
        postprocess_detections(np.ones((2, 3)), np.ones((2, 4)), np.ones((2, 4)), (8, 8))
    with pytest.raises(ValueError, match="probabilities has 2 rows and proposals 1"):
        postprocess_detections(np.ones((2, 3)), np.ones((2, 8)), np.ones((1, 4)), (8, 8))


def test_select_detections_takes_class_agnostic_boxes_and_a_pre_nms_cap():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40]], np.float32)
    scores = np.array([[0.9, 0.8, 0.1], [0.2, 0.7, 0.6]], np.float32)  # [K=2, P=3]
    result = select_detections(boxes, scores, (64, 64), nms_threshold=0.5)
    # class 0 keeps box 0 (box 1 overlaps it); class 1 keeps box 1, box 2 and not box 0.
    assert [
        (int(label), round(float(score), 1)) for _, label, score in zip(*result, strict=True)
    ] == [
        (0, 0.9),
        (1, 0.7),
        (1, 0.6),
        (0, 0.1),
    ]
    capped = select_detections(boxes, scores, (64, 64), nms_threshold=0.5, pre_nms_top_n=2)
    np.testing.assert_allclose(capped.scores, [0.9])  # the cap left 0.9 and 0.8, NMS 0.9
    with pytest.raises(ValueError, match=r"boxes has shape \(3, 5\)"):
        select_detections(np.zeros((3, 5)), scores, (64, 64))

"""Box arithmetic: IoU, coding, clipping, NMS and format conversions."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from utils import boxes

coordinates = st.floats(-50, 150, width=32, allow_nan=False)


def box_arrays(min_size=1, max_size=6):
    """Random boxes, including degenerate ones (x2 < x1) and exact duplicates."""
    return hnp.arrays(
        np.float32, st.tuples(st.integers(min_size, max_size), st.just(4)), elements=coordinates
    )


def proper_boxes(count, rng, size=100.0):
    x1, y1 = rng.uniform(0, size, count), rng.uniform(0, size, count)
    w, h = rng.uniform(1, size / 2, count), rng.uniform(1, size / 2, count)
    return np.stack([x1, y1, x1 + w, y1 + h], axis=1).astype(np.float32)


def test_iou_known_values():
    a = np.array([[0, 0, 2, 2], [0, 0, 3, 1]], np.float32)
    b = np.array([[1, 1, 3, 3], [1, 0, 4, 1], [5, 5, 6, 6]], np.float32)
    np.testing.assert_allclose(boxes.iou(a, b), [[1 / 7, 1 / 6, 0], [0, 0.5, 0]], rtol=1e-6)


def test_iou_is_zero_when_union_is_zero_or_box_is_degenerate():
    points = np.array([[1, 1, 1, 1], [3, 3, 1, 1]], np.float32)
    result = boxes.iou(points, np.concatenate([points, [[0, 0, 4, 4]]]))
    assert np.all(np.isfinite(result))
    np.testing.assert_array_equal(result, 0.0)


@settings(max_examples=30, deadline=None)
@given(box_arrays(), box_arrays())
def test_iou_is_bounded_and_symmetric(a, b):
    forward, backward = boxes.iou(a, b), boxes.iou(b, a)
    assert forward.shape == (len(a), len(b))
    assert np.all((forward >= 0) & (forward <= 1))
    np.testing.assert_allclose(forward, backward.T, rtol=1e-6)
    self_overlap = np.diag(boxes.iou(a, a))
    proper = boxes.area(a) > 1e-3
    np.testing.assert_allclose(self_overlap[proper], 1.0, rtol=1e-5)


def test_numpy_in_numpy_out_and_tensors_in_tensors_out():
    a = proper_boxes(3, np.random.default_rng(0))
    assert isinstance(boxes.iou(a, a), np.ndarray)
    assert isinstance(boxes.encode(a, a), np.ndarray)
    assert tf.is_tensor(boxes.iou(tf.constant(a), a))
    assert tf.is_tensor(boxes.clip(a, tf.constant(50), 60))


def test_encode_known_values_and_weights():
    anchor = np.array([[0, 0, 10, 20]], np.float32)
    box = np.array([[5, 0, 25, 20]], np.float32)
    np.testing.assert_allclose(boxes.encode(box, anchor), [[1.0, 0, math.log(2), 0]], atol=1e-6)
    np.testing.assert_allclose(
        boxes.encode(box, anchor, weights=(10, 10, 5, 5)),
        [[10.0, 0, 5 * math.log(2), 0]],
        rtol=1e-6,
        atol=1e-6,
    )


def proper_box_arrays(count):
    """Boxes with corners in [0, 100] and sides in [1, 50]: ``[count, 4]``."""
    return hnp.arrays(np.float32, (count, 4), elements=st.floats(0, 100, width=32)).map(
        lambda a: np.concatenate([a[:, :2], a[:, :2] + 1 + a[:, 2:] * 0.49], axis=1)
    )


@settings(max_examples=30, deadline=None)
@given(
    proper_box_arrays(8),
    proper_box_arrays(8),
    st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]),
)
def test_decode_inverts_encode(targets, anchors, weights):
    deltas = boxes.encode(targets, anchors, weights)
    # float32 keeps about 1e-5 relative: within 1e-4 px for coordinates up to 150.
    np.testing.assert_allclose(boxes.decode(deltas, anchors, weights), targets, rtol=0, atol=1e-4)


def test_decode_clamps_huge_size_deltas_and_encode_survives_degenerate_boxes():
    anchor = np.array([[0, 0, 16, 16]], np.float32)
    decoded = boxes.decode(np.array([[0, 0, 1e4, 1e4]], np.float32), anchor)
    np.testing.assert_allclose(decoded, [[8 - 500, 8 - 500, 8 + 500, 8 + 500]], rtol=1e-5)
    deltas = boxes.encode(np.array([[5, 5, 3, 3]], np.float32), anchor)
    assert np.all(np.isfinite(deltas))


def test_box_functions_run_in_tf_function_and_xla():
    rng = np.random.default_rng(1)
    a, b = proper_boxes(5, rng), proper_boxes(4, rng)

    def pipeline(a, b):
        deltas = boxes.encode(a[:4], b)
        return boxes.iou(a, b), boxes.clip(boxes.decode(deltas, b), 60, 70)

    eager = pipeline(a, b)
    for jit_compile in (False, True):
        traced = tf.function(pipeline, jit_compile=jit_compile)(tf.constant(a), tf.constant(b))
        for got, want in zip(traced, eager, strict=True):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_clip():
    clipped = boxes.clip(np.array([[-5, 3, 120, 90]], np.float32), height=80, width=100)
    np.testing.assert_array_equal(clipped, [[0, 3, 100, 80]])


def test_nms_matches_tensorflow():
    rng = np.random.default_rng(2)
    for threshold in (0.3, 0.5, 0.7):
        candidates = proper_boxes(60, rng, size=60.0)
        scores = rng.uniform(size=60).astype(np.float32)
        expected = tf.image.non_max_suppression(
            boxes.xyxy_to_yxyx(candidates, 60, 60), scores, 60, iou_threshold=threshold
        )
        np.testing.assert_array_equal(boxes.nms(candidates, scores, threshold), expected.numpy())


def test_nms_suppresses_only_strictly_above_threshold_and_respects_max_output_size():
    candidates = np.array([[0, 0, 3, 1], [1, 0, 4, 1], [0, 0, 3, 1.01]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    # IoU(0, 1) is exactly 0.5: kept at threshold 0.5, suppressed just below it.
    np.testing.assert_array_equal(boxes.nms(candidates, scores, 0.5), [0, 1])
    np.testing.assert_array_equal(boxes.nms(candidates, scores, 0.49), [0])
    np.testing.assert_array_equal(boxes.nms(candidates, scores, 1.0, max_output_size=2), [0, 1])
    assert boxes.nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def test_conversions_round_trip():
    original = proper_boxes(6, np.random.default_rng(3))
    np.testing.assert_allclose(
        boxes.cxcywh_to_xyxy(boxes.xyxy_to_cxcywh(original)), original, rtol=1e-6
    )
    np.testing.assert_allclose(
        boxes.xywh_to_xyxy(boxes.xyxy_to_xywh(original)), original, rtol=1e-6
    )
    normalized = boxes.xyxy_to_yxyx(original, height=80, width=160)
    np.testing.assert_allclose(normalized[:, 0], original[:, 1] / 80, rtol=1e-6)
    np.testing.assert_allclose(normalized[:, 1], original[:, 0] / 160, rtol=1e-6)
    np.testing.assert_allclose(boxes.yxyx_to_xyxy(normalized, 80, 160), original, rtol=1e-5)
    np.testing.assert_allclose(
        boxes.xyxy_to_cxcywh(np.array([[2, 4, 6, 10]], np.float32)), [[4, 7, 4, 6]]
    )


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"boxes_a has shape \(2, 3, 4\): expected \[N, 4\]"):
        boxes.iou(np.zeros((2, 3, 4)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"anchors has shape \(3, 5\): expected \[\.\.\., 4\]"):
        boxes.encode(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(
        ValueError, match=r"scores has shape \(2,\): expected \[3\], one score per box"
    ):
        boxes.nms(np.zeros((3, 4)), np.zeros(2), 0.5)
    with pytest.raises(ValueError, match=r"max_output_size=-1: expected an integer >= 0 or None"):
        boxes.nms(np.zeros((3, 4)), np.zeros(3), 0.5, max_output_size=-1)


@settings(max_examples=20, deadline=None)
@given(box_arrays(), box_arrays())
def test_numpy_and_keras_paths_agree(a, b):
    """One implementation, two namespaces: NumPy inputs and tensor inputs give equal numbers."""
    height, width = 70, 90
    deltas = np.clip(a, -5, 5)
    cases = {
        "area": (boxes.area, (a,)),
        "iou": (boxes.iou, (a, b)),
        "encode": (boxes.encode, (np.abs(a) + 1, np.abs(a) + 2)),
        "decode": (boxes.decode, (deltas, np.abs(a) + 1, (10, 10, 5, 5))),
        "clip": (boxes.clip, (a, height, width)),
        "xyxy_to_cxcywh": (boxes.xyxy_to_cxcywh, (a,)),
        "cxcywh_to_xyxy": (boxes.cxcywh_to_xyxy, (a,)),
        "xywh_to_xyxy": (boxes.xywh_to_xyxy, (a,)),
        "xyxy_to_xywh": (boxes.xyxy_to_xywh, (a,)),
        "xyxy_to_yxyx": (boxes.xyxy_to_yxyx, (a, height, width)),
        "yxyx_to_xyxy": (boxes.yxyx_to_xyxy, (a, height, width)),
    }
    for name, (function, arguments) in cases.items():
        on_numpy = function(*arguments)
        on_tensors = function(tf.constant(arguments[0]), *arguments[1:])
        assert isinstance(on_numpy, np.ndarray) and on_numpy.dtype == np.float32, name
        assert tf.is_tensor(on_tensors), name
        np.testing.assert_allclose(on_numpy, on_tensors.numpy(), rtol=1e-5, atol=1e-4, err_msg=name)


def test_batched_nms_equals_nms_per_label():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 50, (60, 2))
    all_boxes = np.concatenate([corners, corners + rng.uniform(5, 30, (60, 2))], 1)
    scores = rng.uniform(size=60).astype(np.float32)
    labels = rng.integers(0, 3, 60)
    kept = boxes.batched_nms(all_boxes, scores, labels, 0.3)
    expected = []
    for label in range(3):
        index = np.flatnonzero(labels == label)
        expected.extend(index[boxes.nms(all_boxes[index], scores[index], 0.3)])
    assert sorted(kept.tolist()) == sorted(expected)
    assert (np.diff(scores[kept]) <= 0).all()
    assert boxes.batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5).shape == (0,)


def test_remove_small_boxes_flip_boxes_and_paired_iou():
    array = np.array([[0, 0, 10, 10], [0, 0, 0.5, 10], [5, 5, 6, 6]], np.float32)
    np.testing.assert_array_equal(boxes.remove_small_boxes(array, 1.0), [True, False, True])
    tensor_mask = boxes.remove_small_boxes(keras.ops.convert_to_tensor(array), 1.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(tensor_mask), [True, False, True])
    flipped = boxes.flip_boxes(array, 20)
    np.testing.assert_allclose(flipped[0], [10, 0, 20, 10])
    np.testing.assert_allclose(boxes.flip_boxes(flipped, 20), array)
    np.testing.assert_allclose(boxes.flip_boxes(array, 12, horizontal=False)[2], [5, 6, 6, 7])
    other = array + 1
    np.testing.assert_allclose(boxes.paired_iou(array, other), np.diag(boxes.iou(array, other)))
    assert boxes.paired_iou(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0,)
    with pytest.raises(ValueError, match="boxes_a has shape"):
        boxes.paired_iou(np.zeros((3, 4)), np.zeros((2, 4)))


def test_encode_of_a_degenerate_anchor_is_finite():
    deltas = boxes.encode(np.array([[0, 0, 10, 10]]), np.array([[5, 5, 5, 5]]))
    assert np.isfinite(deltas).all()

"""utils.proposals: selective search wrapper, cache and recall."""

import numpy as np
import pytest

from utils import proposals as proposals_module
from utils.proposals import proposal_recall, proposals_for_images, selective_search


def one_object_image(seed=0):
    """A 96x96 textured background with one solid rectangle at [30, 20, 70, 60)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 130, size=(96, 96, 3), dtype=np.uint8)
    image[20:60, 30:70] = (220, 40, 40)
    return image, np.array([[30, 20, 70, 60]], np.float32)


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_some_proposal_covers_the_object(mode):
    from utils.boxes import iou

    image, truth = one_object_image()
    boxes = selective_search(image, mode=mode)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes[:, 2].max() <= 96 and boxes[:, 3].max() <= 96
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    assert np.asarray(iou(truth, boxes)).max() >= 0.7


def test_order_is_repeatable_and_capped():
    image, _ = one_object_image(1)
    first = selective_search(image, max_proposals=50, seed=3)
    second = selective_search(image, max_proposals=50, seed=3)
    assert len(first) <= 50
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image": np.zeros((8, 8), np.uint8)}, r"image has shape \(8, 8\)"),
        ({"image": np.zeros((8, 8, 3), np.float32)}, r"dtype float32: expected RGB uint8"),
        ({"mode": "slow"}, r"mode='slow': expected one of \('fast', 'quality'\)"),
        ({"max_proposals": 0}, r"max_proposals=0"),
    ],
)
def test_bad_input(kwargs, message):
    arguments = {"image": one_object_image()[0], **kwargs}
    with pytest.raises(ValueError, match=message):
        selective_search(**arguments)


def test_missing_contrib_names_the_package(monkeypatch):
    import cv2

    monkeypatch.delattr(cv2, "ximgproc")
    with pytest.raises(ImportError, match="opencv-contrib-python-headless"):
        selective_search(one_object_image()[0])


def test_cache_round_trip_and_corruption(tmp_path, monkeypatch):
    monkeypatch.setattr(proposals_module, "PROPOSAL_CACHE_DIR", tmp_path)
    images = np.stack([one_object_image(s)[0] for s in range(2)])
    first, seconds = proposals_for_images(images, cache_name="t", max_proposals=30, progress=False)
    (path,) = tmp_path.glob("t-*.npz")
    calls = []
    monkeypatch.setattr(proposals_module, "selective_search", lambda *a, **k: calls.append(1))
    second, cached_seconds = proposals_for_images(
        images, cache_name="t", max_proposals=30, progress=False
    )
    assert not calls and cached_seconds == seconds > 0
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    path.write_bytes(b"not a zip file")
    monkeypatch.undo()
    monkeypatch.setattr(proposals_module, "PROPOSAL_CACHE_DIR", tmp_path)
    third, _ = proposals_for_images(images, cache_name="t", max_proposals=30, progress=False)
    for a, b in zip(first, third, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"cache_name='a/b'"):
        proposals_for_images(images, cache_name="a/b")


def test_recall_counts_covered_boxes_per_k():
    truth = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.zeros((0, 4), np.float32)]
    boxes = [
        np.array(
            [[50, 50, 60, 60], [0, 0, 10, 10], [21, 21, 30, 30], [20, 20, 30, 30]], np.float32
        ),
        np.array([[0, 0, 5, 5]], np.float32),
    ]
    recall = proposal_recall(boxes, truth, top_k=[1, 2, 3, 100], iou_threshold=0.5)
    np.testing.assert_allclose(recall, [0.0, 0.5, 1.0, 1.0])
    strict = proposal_recall(boxes, truth, top_k=[3, 4], iou_threshold=0.9)
    np.testing.assert_allclose(strict, [0.5, 1.0])
    with pytest.raises(ValueError, match=r"proposals has 1 images and ground_truth_boxes 2"):
        proposal_recall(boxes[:1], truth, top_k=[1])
    with pytest.raises(ValueError, match=r"top_k=\[0\]"):
        proposal_recall(boxes, truth, top_k=[0])

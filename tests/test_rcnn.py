"""utils.rcnn: warping, the patch classifier, training patches, detection and the cached loader."""

import keras
import numpy as np
import pytest

from utils import boxes as box_ops
from utils import proposals as proposals_module
from utils import rcnn
from utils.metrics import mean_average_precision


def tiny_backbone():
    """A one-convolution stand-in for the course backbone: fast to build and train."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(x)
    return keras.Model(inputs, x, name="tiny_backbone")


def gradient_image(height=32, width=48):
    """An RGB uint8 image whose channels are the column, the row and a constant."""
    rows, columns = np.mgrid[0:height, 0:width]
    return np.stack([columns * 5, rows * 7, np.full_like(rows, 99)], axis=-1).astype(np.uint8)


# ---- warping ---------------------------------------------------------------------------


def test_warp_of_an_exact_size_box_returns_its_pixels():
    image = gradient_image()
    patches = rcnn.warp_proposals(image, np.array([[10, 5, 18, 13], [0, 0, 8, 8]]), size=8)
    assert patches.shape == (2, 8, 8, 3) and patches.dtype == np.uint8
    np.testing.assert_array_equal(patches[0], image[5:13, 10:18])
    np.testing.assert_array_equal(patches[1], image[0:8, 0:8])


def test_warp_stretches_each_axis_to_the_box():
    image = gradient_image()
    # A 16-wide, 4-high box warped to 8x8: every second column, each row twice.
    (patch,) = rcnn.warp_proposals(image, np.array([[8, 4, 24, 8]]), size=8)
    # Column j samples x = 8 + 2 (j + 0.5), halfway between the centres of pixels 8 + 2j
    # and 9 + 2j (pixel index 8.5 + 2j); the red channel is 5 * column.
    np.testing.assert_allclose(patch[0, :, 0], 5 * (8.5 + 2 * np.arange(8)), atol=1)
    # Row i samples y = 4 + (i + 0.5) / 2, pixel index 3.75 + i / 2; green is 7 * row.
    np.testing.assert_allclose(patch[:, 0, 1], 7 * (3.75 + 0.5 * np.arange(8)), atol=1)
    assert (patch[..., 2] == 99).all()


def test_warp_near_the_border_repeats_the_edge_not_black():
    image = np.full((20, 20, 3), 200, np.uint8)
    patches = rcnn.warp_proposals(image, np.array([[0, 0, 4, 4], [16, 16, 20, 20]]), size=16)
    assert (patches == 200).all()


@pytest.mark.parametrize(
    "image, boxes, size, message",
    [
        (np.zeros((8, 8), np.uint8), np.zeros((1, 4)), 4, r"image has shape \(8, 8\)"),
        (np.zeros((8, 8, 3), np.float32), np.zeros((1, 4)), 4, "dtype float32"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((4,)), 4, r"boxes has shape \(4,\)"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((1, 4)), 0, "size=0"),
    ],
)
def test_warp_bad_input(image, boxes, size, message):
    with pytest.raises(ValueError, match=message):
        rcnn.warp_proposals(image, boxes, size)


# ---- the patch classifier and its loss --------------------------------------------------


def test_patch_classifier_outputs():
    model = rcnn.build_patch_classifier(tiny_backbone(), num_classes=5, patch_size=16)
    outputs = model.predict(np.zeros((3, 16, 16, 3), np.float32), verbose=0)
    assert set(outputs) == set(rcnn.OUTPUTS)
    assert outputs["class"].shape == (3, 6) and outputs["box"].shape == (3, 20)
    np.testing.assert_allclose(outputs["class"].sum(axis=1), 1.0, rtol=1e-5)


def test_box_loss_uses_only_the_true_class_of_foreground_patches():
    predicted = np.zeros((3, 8), np.float32)  # 2 classes x 4 deltas
    predicted[0, 4:] = [0.5, 0.0, 0.0, 0.0]  # class 1's deltas on a class-1 patch
    predicted[1, :4] = [3.0, 0.0, 0.0, 0.0]  # class 0's deltas on a class-1 patch: ignored
    predicted[2] = 9.0  # a background patch: ignored whatever it predicts
    truth = np.array([[2, 0, 0, 0, 0], [2, 0, 0, 0, 2.0], [0, 1, 1, 1, 1]], np.float32)
    loss = keras.ops.convert_to_numpy(rcnn.class_specific_box_loss(truth, predicted))
    np.testing.assert_allclose(loss, [0.5 * 0.5**2, 2.0 - 0.5, 0.0], rtol=1e-6)


# ---- the training set ------------------------------------------------------------------


def test_patch_training_set_is_labelled_and_balanced():
    data = rcnn.detection_training_set(3)
    proposals = [
        np.array([[0, 0, 20, 20], [50, 50, 90, 90], [10, 60, 40, 100]], np.float32)
        for _ in range(3)
    ]
    patch_set = rcnn.make_patch_training_set(
        data, proposals, samples_per_image=4, foreground_fraction=0.25, size=16
    )
    assert patch_set.patches.shape == (len(patch_set), 16, 16, 3)
    assert patch_set.box_targets.shape == (len(patch_set), 5)
    np.testing.assert_array_equal(patch_set.box_targets[:, 0], patch_set.labels)
    for index in range(3):
        labels = patch_set.labels[patch_set.image_index == index]
        assert len(labels) <= 4 and np.count_nonzero(labels > 0) <= 1
        # The ground-truth boxes join the proposals, so every image has a foreground patch.
        assert np.count_nonzero(labels > 0) == 1
    foreground = patch_set.labels > 0
    assert (patch_set.box_targets[~foreground, 1:] == 0).all()


def test_shared_sets_are_fixed_and_prefixes():
    small, large = rcnn.detection_validation_set(2), rcnn.detection_validation_set(4)
    np.testing.assert_array_equal(small.images, large.images[:2])
    assert len(rcnn.detection_validation_set()) == rcnn.VALIDATION_IMAGES["fast"]
    assert not np.array_equal(rcnn.detection_training_set(1).images, small.images[:1])
    with pytest.raises(ValueError, match="num_images=0"):
        rcnn.detection_validation_set(0)


# ---- post-processing and detection ------------------------------------------------------


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
    detections = rcnn.postprocess(probabilities, deltas, proposals, (100, 120))
    boxes, labels, scores = detections
    np.testing.assert_allclose(scores, [0.9, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(labels, [0, 1])
    np.testing.assert_allclose(boxes, proposals[[0, 2]], atol=1e-4)
    # A delta moves the box; the box is clipped to the image.
    deltas[3, 4:8] = [10 * 0.5, 0, 0, 0]  # class 1, shift right by half the width (40 px)
    probabilities[3] = [0.0, 0.0, 1.0]
    boxes, labels, scores = rcnn.postprocess(probabilities, deltas, proposals, (100, 120))
    np.testing.assert_allclose(boxes[0], [100, 60, 120, 90], atol=1e-3)


def _postprocess_class_by_class(probabilities, deltas, proposals, image_size):
    """The textbook form: for each class decode, clip, threshold and NMS; then top 100."""
    kept = []
    for label in range(probabilities.shape[1] - 1):
        scores = probabilities[:, label + 1]
        keep = scores > rcnn.SCORE_THRESHOLD
        boxes = box_ops.decode(
            deltas[keep, 4 * label : 4 * label + 4], proposals[keep], weights=rcnn.BOX_WEIGHTS
        )
        boxes = box_ops.clip(boxes, *image_size)
        for index in box_ops.nms(boxes, scores[keep], rcnn.NMS_THRESHOLD):
            kept.append((scores[keep][index], label, boxes[index]))
    kept.sort(key=lambda entry: -entry[0])
    return kept[: rcnn.MAX_DETECTIONS]


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
    boxes, labels, scores = rcnn.postprocess(probabilities, deltas, proposals, image_size)
    expected = _postprocess_class_by_class(probabilities, deltas, proposals, image_size)
    assert len(scores) == len(expected) == rcnn.MAX_DETECTIONS
    np.testing.assert_array_equal(scores, [entry[0] for entry in expected])
    np.testing.assert_array_equal(labels, [entry[1] for entry in expected])
    np.testing.assert_allclose(boxes, [entry[2] for entry in expected], atol=1e-4)


def test_postprocess_with_nothing_above_threshold_is_empty():
    probabilities = np.array([[1.0, 0.0, 0.0]], np.float32)
    boxes, labels, scores = rcnn.postprocess(
        probabilities, np.zeros((1, 8)), np.array([[0, 0, 5, 5]]), (10, 10)
    )
    assert boxes.shape == (0, 4) and labels.shape == (0,) and scores.shape == (0,)
    assert boxes.dtype == np.float32 and labels.dtype == np.int64 and scores.dtype == np.float32


def test_detect_images_output_format_and_timing():
    keras.utils.set_random_seed(0)
    model = rcnn.build_patch_classifier(tiny_backbone(), patch_size=16)
    data = rcnn.detection_validation_set(2)
    proposals = [np.array([[0, 0, 64, 64], [32, 32, 96, 128]], np.float32), np.zeros((0, 4))]
    detections, timing = rcnn.detect_images(
        model, data.images, proposals, progress=False, score_threshold=0.0
    )
    assert len(detections) == 2 and len(detections[1]) == 0
    boxes, labels, scores = detections[0]
    assert boxes.shape == (len(scores), 4) and len(labels) == len(scores) > 0
    assert (np.diff(scores) <= 0).all()
    assert (boxes >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 128).all()
    assert set(labels.tolist()) <= set(range(rcnn.NUM_CLASSES))
    assert {"warp", "cnn", "postprocess", "detection", "cnn_per_patch"} <= set(timing)
    assert timing["patches_per_image"] == 1.0
    result = mean_average_precision(data.ground_truths(), [tuple(d) for d in detections])
    assert 0.0 <= result["mAP"] <= 1.0
    single = rcnn.detect(model, data.images[0], proposals[0], score_threshold=0.0)
    np.testing.assert_allclose(single.scores, scores, rtol=1e-5)


# ---- the cached loader ------------------------------------------------------------------


@pytest.fixture
def tiny_training(tmp_path, monkeypatch):
    """load_rcnn on two images, a tiny backbone and a temporary cache directory."""
    monkeypatch.setattr(rcnn, "RCNN_CACHE_DIR", tmp_path / "rcnn")
    monkeypatch.setattr(proposals_module, "PROPOSAL_CACHE_DIR", tmp_path / "proposals")
    monkeypatch.setattr(rcnn, "rcnn_backbone", lambda fast=None, verbose=True: tiny_backbone())
    settings = rcnn.TrainingSettings(num_images=2, samples_per_image=8, epochs=1, batch_size=8)
    monkeypatch.setattr(rcnn, "TRAINING_SETTINGS", {"fast": settings, "full": settings})
    return tmp_path / "rcnn"


def test_load_rcnn_trains_on_a_miss_then_loads(tiny_training, capsys):
    model, info = rcnn.load_rcnn(fast=True)
    assert info.source == "trained" and info.path.exists()
    assert info.path.parent == tiny_training and "-fast-" in info.path.name
    assert info.num_patches == 16 and len(info.history["loss"]) == 1
    assert "training" in capsys.readouterr().out
    assert not list(tiny_training.glob("*.tmp*"))
    loaded, loaded_info = rcnn.load_rcnn(fast=True)
    assert loaded_info.source == "cache" and "loaded from" in capsys.readouterr().out
    assert loaded_info.history == info.history
    patches = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3)).astype(np.float32)
    first = model.predict(patches, verbose=0)
    second = loaded.predict(patches, verbose=0)
    np.testing.assert_allclose(first["class"], second["class"], rtol=1e-5)
    np.testing.assert_allclose(first["box"], second["box"], rtol=1e-5, atol=1e-6)


def test_load_rcnn_caches_modes_apart_and_retrains_a_corrupt_file(tiny_training, capsys):
    assert rcnn.rcnn_cache_path(fast=True) != rcnn.rcnn_cache_path(fast=False)
    _, info = rcnn.load_rcnn(fast=True, verbose=False)
    info.path.write_bytes(b"not a keras file")
    _, again = rcnn.load_rcnn(fast=True)
    assert again.source == "trained" and "unreadable" in capsys.readouterr().out
    _, cached = rcnn.load_rcnn(fast=True, verbose=False)
    assert cached.source == "cache"


def test_time_per_image_averages_each_stage_and_counts_proposals():
    def detect_one(index):
        seconds = {"first": 1.0 + index, "second": 0.5}
        return f"detections {index}", seconds, 10 * (index + 1)

    results, timing, proposals = rcnn.time_per_image(
        3, detect_one, ("first", "second"), description="test", progress=False
    )
    assert results == ["detections 0", "detections 1", "detections 2"]
    assert timing == {"first": 2.0, "second": 0.5} and proposals == 60
    results, timing, proposals = rcnn.time_per_image(
        0, detect_one, ("first", "second"), description="test", progress=False
    )
    assert results == [] and timing == {"first": 0.0, "second": 0.0} and proposals == 0

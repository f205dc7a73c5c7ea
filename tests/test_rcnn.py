"""utils.rcnn: warping, the patch classifier, training patches, detection and the cached loader."""

import keras
import numpy as np
import pytest
from detection_helpers import check_cached_loader, make_tiny_backbone

from utils import rcnn
from utils.detection_data import detection_training_set, detection_validation_set
from utils.metrics import mean_average_precision
from utils.roi_heads import NUM_CLASSES


def tiny_backbone():
    return make_tiny_backbone(stride=4, channels=4)


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
        (np.zeros((8, 8, 3), np.uint8), np.zeros((3,)), 4, r"boxes has shape \(3,\)"),
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
    data = detection_training_set(3)
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


def test_detect_images_output_format_and_timing():
    keras.utils.set_random_seed(0)
    model = rcnn.build_patch_classifier(tiny_backbone(), patch_size=16)
    data = detection_validation_set(2)
    proposals = [np.array([[0, 0, 64, 64], [32, 32, 96, 128]], np.float32), np.zeros((0, 4))]
    detections, timing = rcnn.detect_images(
        model, data.images, proposals, progress=False, score_threshold=0.0
    )
    assert len(detections) == 2 and len(detections[1]) == 0
    boxes, labels, scores = detections[0]
    assert boxes.shape == (len(scores), 4) and len(labels) == len(scores) > 0
    assert (np.diff(scores) <= 0).all()
    assert (boxes >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 128).all()
    assert set(labels.tolist()) <= set(range(NUM_CLASSES))
    assert {"warp", "cnn", "postprocess", "detection", "cnn_per_patch"} <= set(timing)
    assert timing["proposals_per_image"] == 1.0
    result = mean_average_precision(data.ground_truths(), [tuple(d) for d in detections])
    assert 0.0 <= result["mAP"] <= 1.0
    single = rcnn.detect(model, data.images[0], proposals[0], score_threshold=0.0)
    np.testing.assert_allclose(single.scores, scores, rtol=1e-5)


# ---- the cached loader ------------------------------------------------------------------


def test_load_rcnn_trains_on_a_miss_then_loads(tiny_detector_cache, capsys):
    settings = rcnn.RCNNSettings(num_images=2, samples_per_image=8, epochs=1, batch_size=8)
    folder = tiny_detector_cache(rcnn.RCNN, settings)
    patches = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3)).astype(np.float32)

    def outputs(model):
        predicted = model.predict(patches, verbose=0)
        return [predicted["class"], predicted["box"]]

    info = check_cached_loader(rcnn.load_rcnn, folder, capsys, outputs)
    assert info.training_size == 16 and len(info.history["loss"]) == 1
    assert rcnn.RCNN.cache_path("fast") != rcnn.RCNN.cache_path("full")

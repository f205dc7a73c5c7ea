"""utils.fast_rcnn: training batches, the model, training, inference and the cached loader."""

import keras
import numpy as np
import pytest
from detection_helpers import TIMING_KEYS, check_cached_loader, make_tiny_backbone

from utils import fast_rcnn
from utils.boxes import flip_boxes, iou
from utils.detection_data import detection_validation_set
from utils.layers import boxes_to_rois
from utils.roi_heads import Detections, TrainingRecipe, sample_rois
from utils.shapes import make_shapes

STRIDE = 4
SIZE = 64
CLASSES = ("circle", "square", "triangle")


def tiny_backbone():
    return make_tiny_backbone(STRIDE)


def tiny_model(**options):
    keras.utils.set_random_seed(0)
    return fast_rcnn.FastRCNN(
        tiny_backbone(), 3, feature_stride=STRIDE, pool_size=2, hidden_units=(16,), **options
    )


# ---- training batches ---------------------------------------------------------------


def test_boxes_to_rois_layout():
    boxes = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    rois = np.asarray(boxes_to_rois(boxes))
    assert rois.shape == (6, 5)
    np.testing.assert_array_equal(rois[:, 0], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(rois[:, 1:], boxes.reshape(6, 4))


def test_training_batches_are_repeatable_and_resampled_each_epoch():
    data = make_shapes(
        "detection", 3, image_size=SIZE, difficulty="easy", seed=4, split="train", classes=CLASSES
    )
    proposals = [np.array([[0, 0, 16, 16], [8, 8, 24, 24], [4, 0, 30, 20]], np.float32)] * 3
    first = fast_rcnn.RoITrainingBatches(data, proposals, images_per_batch=2, samples_per_image=6)
    second = fast_rcnn.RoITrainingBatches(data, proposals, images_per_batch=2, samples_per_image=6)
    assert len(first) == 2
    x, y = first[0]
    assert x["images"].shape == (2, SIZE, SIZE, 3) and x["proposals"].shape == (2, 6, 4)
    assert y["labels"].shape == (2, 6) and y["regression_targets"].shape == (2, 6, 4)
    assert x["images"].dtype == np.uint8
    assert first[1][0]["images"].shape == (1, SIZE, SIZE, 3)
    np.testing.assert_array_equal(second[0][0]["proposals"], x["proposals"])
    epochs = {first[0][0]["images"].tobytes()}
    for _ in range(4):
        first.on_epoch_end()
        epochs.add(first[0][0]["images"].tobytes())
    assert len(epochs) > 1, "the image order should change between epochs"
    with pytest.raises(
        ValueError, match="proposals has 1 entries and data 3: expected one per image"
    ):
        fast_rcnn.RoITrainingBatches(data, proposals[:1])


@pytest.mark.parametrize("horizontal", [True, False])
def test_training_batches_flip_images_with_their_boxes(horizontal):
    data = make_shapes("detection", 8, image_size=SIZE, difficulty="easy", seed=5, classes=CLASSES)
    proposals = [np.concatenate([boxes, boxes + 1]) for boxes in data.boxes]
    batches = fast_rcnn.RoITrainingBatches(
        data,
        proposals,
        images_per_batch=8,
        samples_per_image=8,
        horizontal_flip=horizontal,
        vertical_flip=not horizontal,
    )
    x, y = batches[0]
    flipped = 0
    for row, image in enumerate(batches._order()):
        truth = data.boxes[image]
        if not np.array_equal(x["images"][row], data.images[image]):
            axis = 1 if horizontal else 0
            np.testing.assert_array_equal(x["images"][row], np.flip(data.images[image], axis))
            truth = flip_boxes(truth, SIZE, horizontal=horizontal)
            flipped += 1
        foreground = y["labels"][row] > 0
        overlaps = np.asarray(iou(x["proposals"][row][foreground], truth))
        assert foreground.any() and (overlaps.max(axis=1) >= 0.5).all()
    assert 0 < flipped < 8


# ---- the model: shapes, training, inference ---------------------------------------------


def test_model_output_shapes(one_image):
    data, proposals = one_image
    model = tiny_model()
    outputs = model(
        {"images": np.repeat(data.images, 2, axis=0), "proposals": np.stack([proposals[:5]] * 2)}
    )
    assert tuple(outputs["class_logits"].shape) == (2, 5, 4)
    assert tuple(outputs["box_deltas"].shape) == (2, 5, 12)
    with pytest.raises(ValueError, match="expected a feature map"):
        backbone = tiny_backbone()
        pooled = keras.Model(backbone.input, keras.layers.GlobalAveragePooling2D()(backbone.output))
        fast_rcnn.FastRCNN(pooled, 3, feature_stride=4)
    with pytest.raises(ValueError, match="feature_stride=0"):
        fast_rcnn.FastRCNN(tiny_backbone(), 3, feature_stride=0)


def test_one_image_overfit_lowers_the_loss(one_image):
    data, proposals = one_image
    sample = sample_rois(
        proposals,
        data.boxes[0],
        data.labels[0],
        num_samples=16,
        foreground_fraction=0.5,
        rng=np.random.default_rng(0),
    )
    model = tiny_model()
    model.compile(keras.optimizers.Adam(1e-2))
    history = model.fit(
        {"images": data.images, "proposals": sample.boxes[None]},
        {"labels": sample.labels[None], "regression_targets": sample.regression_targets[None]},
        epochs=50,
        verbose=0,
    ).history
    assert set(history) == {"loss", "class_loss", "box_loss", "accuracy"}
    assert np.isfinite(history["loss"]).all()
    assert history["loss"][-1] < 0.25 * history["loss"][0]
    assert history["box_loss"][-1] < 0.5 * history["box_loss"][0]
    assert history["accuracy"][-1] == 1.0


def test_train_fast_rcnn_resamples_and_logs(one_image):
    data, proposals = one_image
    model = tiny_model()
    recipe = TrainingRecipe(images_per_batch=1, rois_per_image=8, epochs=3, pool_size=2)
    history = fast_rcnn.train_fast_rcnn(model, data, [proposals], recipe, verbose=False)
    assert {key: len(values) for key, values in history.items()} == {
        "loss": 3,
        "class_loss": 3,
        "box_loss": 3,
        "accuracy": 3,
    }
    assert np.isfinite(history["loss"]).all()


def test_inference_output_format(one_image):
    data, proposals = one_image
    model = tiny_model()
    probabilities, deltas = model.score_proposals(data.images[0], proposals)
    assert probabilities.shape == (len(proposals), 4) and deltas.shape == (len(proposals), 12)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    detections, timing = fast_rcnn.detect_images(
        model, data.images, [proposals], progress=False, max_detections=7
    )
    (result,) = detections
    assert isinstance(result, Detections) and 0 < len(result) <= 7
    boxes, labels, scores = result
    assert boxes.dtype == np.float32 and labels.dtype == np.int64 and scores.dtype == np.float32
    assert (np.diff(scores) <= 0).all() and (scores > 0.05).all()
    assert ((boxes >= 0) & (boxes <= SIZE)).all() and set(labels.tolist()) <= {0, 1, 2}
    assert set(timing) == TIMING_KEYS
    assert timing["proposals_per_image"] == len(proposals)
    single = fast_rcnn.detect(model, data.images[0], proposals, max_detections=7)
    np.testing.assert_allclose(single.scores, scores, rtol=1e-5)
    # A different number of proposals reuses the traced graph and still works.
    assert len(fast_rcnn.detect(model, data.images[0], proposals[:3])) <= 3 * 3
    with pytest.raises(ValueError, match="dtype float32"):
        model.score_proposals(data.images[0].astype(np.float32), proposals)


def test_saved_model_round_trip(tmp_path, one_image):
    data, proposals = one_image
    model = tiny_model(pooling="roi_align")
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert isinstance(loaded, fast_rcnn.FastRCNN) and loaded.head.pooling == "roi_align"
    for first, second in zip(
        model.score_proposals(data.images[0], proposals),
        loaded.score_proposals(data.images[0], proposals),
        strict=True,
    ):
        np.testing.assert_allclose(first, second, rtol=1e-6)


# ---- the cached loader ------------------------------------------------------------------


def test_load_fast_rcnn_trains_on_a_miss_then_loads(tiny_detector_cache, capsys):
    recipe = TrainingRecipe("roi_pool", pool_size=2, hidden_units=(8,), rois_per_image=8, epochs=1)
    settings = fast_rcnn.FastRCNNSettings(2, recipe)
    folder = tiny_detector_cache(fast_rcnn.FAST_RCNN, settings, STRIDE)
    image = detection_validation_set(1).images[0]
    boxes = np.array([[0, 0, 40, 40], [30, 20, 90, 100]], np.float32)
    info = check_cached_loader(
        fast_rcnn.load_fast_rcnn, folder, capsys, lambda m: m.score_proposals(image, boxes)
    )
    assert info.training_size == 2 and set(info.history) == {
        "loss",
        "class_loss",
        "box_loss",
        "accuracy",
    }
    assert fast_rcnn.FAST_RCNN.cache_path("fast") != fast_rcnn.FAST_RCNN.cache_path("full")

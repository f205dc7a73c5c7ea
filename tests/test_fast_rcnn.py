"""utils.fast_rcnn: the RoI head, its loss, RoI sampling, the model, inference and the loader."""

import keras
import numpy as np
import pytest

from utils import fast_rcnn, rcnn
from utils import proposals as proposals_module
from utils.boxes import iou
from utils.layers import RoIPooling
from utils.shapes import make_shapes

STRIDE = 4
SIZE = 64
CLASSES = ("circle", "square", "triangle")


def tiny_backbone():
    """A one-convolution stand-in for the course backbone (stride 4): fast to build and train."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=STRIDE, padding="same", activation="relu")(x)
    return keras.Model(inputs, x, name="tiny_backbone")


def tiny_model(**options):
    keras.utils.set_random_seed(0)
    return fast_rcnn.FastRCNN(
        tiny_backbone(), 3, feature_stride=STRIDE, pool_size=2, hidden_units=(16,), **options
    )


@pytest.fixture(scope="module")
def one_image():
    """A detection image with its ground truth and hand-made proposals around the objects."""
    data = make_shapes(
        "detection",
        1,
        image_size=SIZE,
        difficulty="easy",
        seed=3,
        split="train",
        classes=CLASSES,
        min_objects=2,
    )
    truth = data.boxes[0]
    rng = np.random.default_rng(0)
    jitter = rng.normal(0, 2, (len(truth), 6, 4)).astype(np.float32)
    near = (truth[:, None, :] + jitter).reshape(-1, 4)
    corners = rng.uniform(0, SIZE - 12, (20, 2)).astype(np.float32)
    far = np.concatenate([corners, corners + 12], axis=1)
    return data, np.clip(np.concatenate([near, far]), 0, SIZE)


# ---- the head ---------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["roi_pool", "roi_align"])
def test_head_output_shapes_and_config(pooling):
    head = fast_rcnn.FastRCNNHead(
        4, pool_size=3, spatial_scale=0.25, hidden_units=(32, 16), pooling=pooling
    )
    features = np.random.default_rng(0).normal(size=(2, 8, 8, 5)).astype(np.float32)
    rois = np.array([[0, 0, 0, 16, 16], [1, 4, 4, 30, 20], [1, 0, 0, 32, 32]], np.float32)
    class_logits, box_deltas = head(features, rois)
    assert tuple(class_logits.shape) == (3, 5) and tuple(box_deltas.shape) == (3, 16)
    assert tuple(head.pool(features, rois).shape) == (3, 3, 3, 5)
    # fc1 sees 3 x 3 bins x 5 channels; the two sibling layers sit on fc2.
    assert [w.shape for w in head.trainable_weights[::2]] == [(45, 32), (32, 16), (16, 5), (16, 16)]
    clone = fast_rcnn.FastRCNNHead.from_config(head.get_config())
    assert clone.pool_size == (3, 3) and clone.pooling == pooling and clone.spatial_scale == 0.25


def test_head_output_shape_does_not_depend_on_the_roi_size():
    head = fast_rcnn.FastRCNNHead(2, pool_size=2, spatial_scale=0.5, hidden_units=(8,))
    features = np.ones((1, 16, 16, 3), np.float32)
    small, large = (
        np.array([[0, 0, 0, 4, 4]], np.float32),
        np.array([[0, 0, 0, 30, 24]], np.float32),
    )
    assert head.pool(features, small).shape == head.pool(features, large).shape == (1, 2, 2, 3)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_classes": 0}, "num_classes=0"),
        ({"hidden_units": (8, 0)}, "hidden_units=0"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"pooling": "spp"}, "pooling='spp'"),
        ({"pool_size": 0}, "pool_size"),
        ({"spatial_scale": -1.0}, "spatial_scale"),
    ],
)
def test_head_bad_arguments(options, message):
    arguments = {"num_classes": 2, **options}
    with pytest.raises(ValueError, match=message):
        fast_rcnn.FastRCNNHead(**arguments)


# ---- the loss ---------------------------------------------------------------------------


def test_loss_by_hand():
    # Two classes (K = 2): one class-2 RoI, one background RoI, one padding row.
    labels = np.array([2, 0, -1])
    targets = np.array([[0.5, -2.0, 0.0, 0.0], [0, 0, 0, 0], [9, 9, 9, 9]], np.float32)
    logits = np.array([[0.0, 0.0, np.log(2.0)], [np.log(3.0), 0.0, 0.0], [5, 5, 5]], np.float32)
    deltas = np.zeros((3, 8), np.float32)
    deltas[0, 4:] = [0.0, 0.0, 0.25, 0.0]  # class 2's deltas; class 1's stay 0
    deltas[1] = 7.0  # a background RoI's deltas never count
    losses = fast_rcnn.fast_rcnn_loss(labels, targets, logits, deltas)
    class_loss = (-np.log(2 / 4) - np.log(3 / 5)) / 2
    # smooth L1 (beta 1) of |0 - 0.5|, |0 + 2|, |0.25 - 0|, |0 - 0|, over 2 valid RoIs.
    box_loss = (0.5 * 0.5**2 + (2 - 0.5) + 0.5 * 0.25**2) / 2
    np.testing.assert_allclose(float(losses["class_loss"]), class_loss, rtol=1e-5)
    np.testing.assert_allclose(float(losses["box_loss"]), box_loss, rtol=1e-5)
    np.testing.assert_allclose(float(losses["loss"]), class_loss + box_loss, rtol=1e-5)
    weighted = fast_rcnn.fast_rcnn_loss(labels, targets, logits, deltas, box_loss_weight=2.0)
    np.testing.assert_allclose(float(weighted["loss"]), class_loss + 2 * box_loss, rtol=1e-5)


def test_loss_takes_batched_shapes_and_all_padding_is_zero():
    labels = np.full((2, 3), -1)
    losses = fast_rcnn.fast_rcnn_loss(
        labels, np.ones((2, 3, 4)), np.ones((2, 3, 4), np.float32), np.ones((2, 3, 12), np.float32)
    )
    assert float(losses["loss"]) == 0.0


# ---- RoI sampling -----------------------------------------------------------------------


def test_sample_rois_adds_ground_truth_balances_and_pads(one_image):
    data, proposals = one_image
    truth, classes = data.boxes[0], data.labels[0]
    sample = fast_rcnn.sample_rois(
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
    only_truth = fast_rcnn.sample_rois(
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
        fast_rcnn.sample_rois(
            proposals, data.boxes[0], data.labels[0], num_samples=0, rng=np.random.default_rng(0)
        )
    with pytest.raises(ValueError, match="foreground_fraction=1.5"):
        fast_rcnn.sample_rois(
            proposals,
            data.boxes[0],
            data.labels[0],
            foreground_fraction=1.5,
            rng=np.random.default_rng(0),
        )


def test_batched_rois_layout():
    boxes = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    rois = np.asarray(fast_rcnn.batched_rois(boxes))
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
    with pytest.raises(ValueError, match="proposals has 1 images and data 3"):
        fast_rcnn.RoITrainingBatches(data, proposals[:1])


def test_training_batches_flip_images_with_their_boxes():
    data = make_shapes("detection", 6, image_size=SIZE, difficulty="easy", seed=5, classes=CLASSES)
    proposals = [np.concatenate([boxes, boxes + 1]) for boxes in data.boxes]
    batches = fast_rcnn.RoITrainingBatches(
        data, proposals, images_per_batch=6, samples_per_image=8, horizontal_flip=True
    )
    x, y = batches[0]
    flipped = 0
    for row, image in enumerate(batches._order()):
        mirrored = not np.array_equal(x["images"][row], data.images[image])
        if mirrored:
            np.testing.assert_array_equal(x["images"][row], data.images[image][:, ::-1])
            flipped += 1
        truth = data.boxes[image]
        if mirrored:
            truth = np.stack([SIZE - truth[:, 2], truth[:, 1], SIZE - truth[:, 0], truth[:, 3]], 1)
        foreground = y["labels"][row] > 0
        overlaps = np.asarray(iou(x["proposals"][row][foreground], truth))
        assert foreground.any() and (overlaps.max(axis=1) >= 0.5).all()
    assert 0 < flipped < 6


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
    sample = fast_rcnn.sample_rois(
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
    settings = fast_rcnn.FastRCNNSettings(
        num_images=1, images_per_batch=1, samples_per_image=8, epochs=3, pool_size=2
    )
    history = fast_rcnn.train_fast_rcnn(model, data, [proposals], settings, verbose=False)
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
    assert isinstance(result, rcnn.Detections) and 0 < len(result) <= 7
    boxes, labels, scores = result
    assert boxes.dtype == np.float32 and labels.dtype == np.int64 and scores.dtype == np.float32
    assert (np.diff(scores) <= 0).all() and (scores > 0.05).all()
    assert ((boxes >= 0) & (boxes <= SIZE)).all() and set(labels.tolist()) <= {0, 1, 2}
    assert set(timing) == {"backbone", "head", "postprocess", "detection", "proposals_per_image"}
    assert timing["proposals_per_image"] == len(proposals)
    single = fast_rcnn.detect(model, data.images[0], proposals, max_detections=7)
    np.testing.assert_allclose(single.scores, scores, rtol=1e-5)
    # A different number of proposals reuses the traced graph and still works.
    assert len(fast_rcnn.detect(model, data.images[0], proposals[:3])) <= 3 * 3
    with pytest.raises(ValueError, match="dtype float32"):
        model.score_proposals(data.images[0].astype(np.float32), proposals)


def test_roi_buckets_waste_at_most_a_third():
    assert [fast_rcnn.roi_bucket(n) for n in (0, 1, 32, 33, 48, 49, 65, 97, 129, 200)] == [
        32, 32, 32, 48, 48, 64, 96, 128, 192, 256,
    ]  # fmt: skip
    for count in range(1, 3000, 7):
        bucket = fast_rcnn.roi_bucket(count)
        assert count <= bucket and (bucket <= 32 or (bucket - count) / bucket < 1 / 3)


@pytest.mark.parametrize("count", [0, 1, 32, 33, 50])
def test_compiled_head_equals_the_head(one_image, count):
    """Padding to a bucket and XLA change nothing but speed: same rows, same numbers."""
    data, proposals = one_image
    model = tiny_model()
    boxes = np.resize(proposals, (count, 4))
    rois = np.concatenate([np.zeros((count, 1), np.float32), boxes], axis=1)
    features = model.features(data.images[:1])
    probabilities, deltas = fast_rcnn.CompiledHead(model.head)(features, rois)
    logits, expected_deltas = model.head(features, rois, training=False)
    assert isinstance(probabilities, np.ndarray) and probabilities.shape == (count, 4)
    np.testing.assert_allclose(probabilities, keras.ops.softmax(logits), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(deltas, expected_deltas, rtol=1e-4, atol=1e-6)


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


@pytest.fixture
def tiny_training(tmp_path, monkeypatch):
    """load_fast_rcnn on two images, a tiny backbone and temporary cache directories."""
    monkeypatch.setattr(fast_rcnn, "FAST_RCNN_CACHE_DIR", tmp_path / "fast_rcnn")
    monkeypatch.setattr(proposals_module, "PROPOSAL_CACHE_DIR", tmp_path / "proposals")
    monkeypatch.setattr(
        fast_rcnn, "fast_rcnn_backbone", lambda fast=None, verbose=True: (tiny_backbone(), STRIDE)
    )
    monkeypatch.setattr(fast_rcnn, "_backbone_identity", lambda fast=None: "tiny")
    settings = fast_rcnn.FastRCNNSettings(
        num_images=2, samples_per_image=8, epochs=1, pool_size=2, hidden_units=(8,)
    )
    monkeypatch.setattr(fast_rcnn, "SETTINGS", {"fast": settings, "full": settings})
    return tmp_path / "fast_rcnn"


def test_load_fast_rcnn_trains_on_a_miss_then_loads(tiny_training, capsys):
    model, info = fast_rcnn.load_fast_rcnn(fast=True)
    assert info.source == "trained" and info.path.exists()
    assert info.path.parent == tiny_training and "-fast-" in info.path.name
    assert info.num_images == 2 and len(info.history["loss"]) == 1
    assert "training" in capsys.readouterr().out
    assert not list(tiny_training.glob("*.tmp*"))
    loaded, loaded_info = fast_rcnn.load_fast_rcnn(fast=True)
    assert loaded_info.source == "cache" and "loaded from" in capsys.readouterr().out
    assert loaded_info.history == info.history
    image = rcnn.detection_validation_set(1).images[0]
    boxes = np.array([[0, 0, 40, 40], [30, 20, 90, 100]], np.float32)
    for first, second in zip(
        model.score_proposals(image, boxes), loaded.score_proposals(image, boxes), strict=True
    ):
        np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-7)


def test_load_fast_rcnn_caches_modes_apart_and_retrains_a_corrupt_file(tiny_training, capsys):
    assert fast_rcnn.fast_rcnn_cache_path(fast=True) != fast_rcnn.fast_rcnn_cache_path(fast=False)
    _, info = fast_rcnn.load_fast_rcnn(fast=True, verbose=False)
    info.path.write_bytes(b"not a keras file")
    _, again = fast_rcnn.load_fast_rcnn(fast=True)
    assert again.source == "trained" and "unreadable" in capsys.readouterr().out
    _, cached = fast_rcnn.load_fast_rcnn(fast=True, verbose=False)
    assert cached.source == "cache"


# ---- drawing helper ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "box, scale, pool",
    [
        ((0, 0, 20, 20), 0.1, 2),  # Dive into Deep Learning's worked example
        ((3, 5, 61, 40), 0.125, 4),
        ((40, 2, 70, 9), 0.25, (3, 2)),  # partly off an 8 x 16 map
    ],
)
def test_roi_pool_bins_match_the_layer(box, scale, pool):
    features = np.arange(8 * 16, dtype=np.float32).reshape(1, 8, 16, 1)
    pooled = np.asarray(RoIPooling(pool, scale)(features, np.array([[0, *box]], np.float32)))[0]
    bins = fast_rcnn.roi_pool_bins(box, scale, pool, (8, 16))
    assert bins["rows"].shape == (pooled.shape[0], 2)
    assert bins["columns"].shape == (pooled.shape[1], 2)
    np.testing.assert_allclose(bins["projected"], np.array(box, np.float32) * np.float32(scale))
    for i, (top, bottom) in enumerate(bins["rows"]):
        for j, (left, right) in enumerate(bins["columns"]):
            window = features[0, top:bottom, left:right, 0]
            expected = window.max() if window.size else 0.0
            assert pooled[i, j, 0] == expected


def test_roi_pool_bins_worked_example():
    features = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    bins = fast_rcnn.roi_pool_bins((0, 0, 20, 20), 0.1, 2, (4, 4))
    np.testing.assert_array_equal(bins["rows"], [[0, 2], [1, 3]])
    pooled = [
        [features[0, r0:r1, c0:c1, 0].max() for c0, c1 in bins["columns"]]
        for r0, r1 in bins["rows"]
    ]
    assert pooled == [[5, 6], [9, 10]]

"""Classification + localization: box coding, paired IoU, the two-headed model and its loss."""

import keras
import matplotlib
import numpy as np
import pytest

from utils import localization

matplotlib.use("Agg")


def tiny_backbone():
    """A two-convolution feature extractor: ``[B, 16, 16, 3] -> [B, 4, 4, 8]``."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inputs, x, name="tiny_backbone")


def tiny_localizer(seed=0):
    keras.utils.set_random_seed(seed)
    return localization.build_localizer(tiny_backbone(), 3, input_shape=(16, 16, 3))


def tiny_batch(count=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, count).astype(np.int32)
    x1, y1 = rng.uniform(0, 8, count), rng.uniform(0, 8, count)
    w, h = rng.uniform(2, 8, count), rng.uniform(2, 8, count)
    boxes = np.stack([x1, y1, x1 + w, y1 + h], axis=1).astype(np.float32)
    return images, labels, boxes


def test_encode_boxes_known_values_and_round_trip():
    boxes = np.array([[16, 8, 48, 40], [0, 0, 64, 32]], np.float32)
    encoded = localization.encode_boxes(boxes, (32, 64))  # height 32, width 64
    np.testing.assert_allclose(encoded, [[0.5, 0.75, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]])
    assert encoded.dtype == np.float32
    np.testing.assert_allclose(localization.decode_boxes(encoded, (32, 64)), boxes, atol=1e-5)
    square = localization.encode_boxes(boxes, 64)
    np.testing.assert_allclose(localization.decode_boxes(square, 64), boxes, atol=1e-5)


@pytest.mark.parametrize("image_size", [0, -4, (64,), (64, 0), 64.0, True])
def test_bad_image_size_is_named(image_size):
    with pytest.raises(ValueError, match="image_size"):
        localization.encode_boxes(np.zeros((1, 4), np.float32), image_size)


def test_build_localizer_outputs_and_trainable_backbone():
    model = tiny_localizer()
    images, _, _ = tiny_batch(2)
    outputs = model.predict(images, verbose=0)
    assert set(outputs) == set(localization.OUTPUTS)
    assert outputs["label"].shape == (2, 3) and outputs["box"].shape == (2, 4)
    np.testing.assert_allclose(outputs["label"].sum(axis=1), 1.0, rtol=1e-5)
    assert ((outputs["box"] > 0) & (outputs["box"] < 1)).all()
    groups = localization.weight_groups(model)
    assert len(groups["backbone"]) == 4  # two kernels, two biases
    assert len(groups["class head"]) == 2 and len(groups["box head"]) == 6
    assert sum(map(len, groups.values())) == len(model.trainable_weights)


def test_build_localizer_needs_a_fixed_input_and_a_feature_map():
    with pytest.raises(ValueError, match="input_shape"):
        localization.build_localizer(tiny_backbone(), 3)
    inputs = keras.Input((16, 16, 3))
    pooled = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    with pytest.raises(ValueError, match="feature map"):
        localization.build_localizer(pooled, 3)
    with pytest.raises(ValueError, match="num_classes"):
        localization.build_localizer(tiny_backbone(), 1, input_shape=(16, 16, 3))


def test_compiled_loss_is_cls_plus_alpha_times_box():
    images, labels, boxes = tiny_batch()
    targets = {"label": labels, "box": localization.encode_boxes(boxes, 16)}
    model = tiny_localizer()
    predictions = model.predict(images, verbose=0)
    cls = float(np.mean(keras.losses.sparse_categorical_crossentropy(labels, predictions["label"])))
    box = float(np.abs(predictions["box"] - targets["box"]).mean())
    for alpha in (0.0, 0.5, 10.0):
        localization.compile_localizer(model, alpha)
        logs = model.evaluate(images, targets, verbose=0, return_dict=True)
        assert logs["loss"] == pytest.approx(cls + alpha * box, rel=1e-4)
        assert logs["box_loss"] == pytest.approx(box, rel=1e-4)


@pytest.mark.parametrize("alpha", [-1.0, "1", None, True, float("nan")])
def test_compile_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        localization.compile_localizer(tiny_localizer(), alpha)


def test_each_loss_reaches_the_backbone_and_only_its_own_head():
    images, labels, boxes = tiny_batch()
    norms = localization.loss_gradient_norms(
        tiny_localizer(), images, labels, localization.encode_boxes(boxes, 16)
    )
    assert norms["L_cls"]["box head"] == 0.0 and norms["L_box"]["class head"] == 0.0
    assert norms["L_cls"]["class head"] > 0 and norms["L_box"]["box head"] > 0
    assert norms["L_cls"]["backbone"] > 0 and norms["L_box"]["backbone"] > 0


def test_training_with_alpha_zero_leaves_the_box_head_alone():
    images, labels, boxes = tiny_batch()
    model = tiny_localizer()
    box_head = [w.numpy().copy() for w in localization.weight_groups(model)["box head"]]
    localization.compile_localizer(model, 0.0)
    model.fit(images, {"label": labels, "box": localization.encode_boxes(boxes, 16)}, verbose=0)
    for before, weight in zip(box_head, localization.weight_groups(model)["box head"], strict=True):
        np.testing.assert_array_equal(before, weight.numpy())


def test_evaluate_localizer_scores_a_perfect_box():
    images, labels, boxes = tiny_batch()
    model = tiny_localizer()
    result = localization.evaluate_localizer(model, images, labels, boxes)
    assert set(result) == {"accuracy", "mean_iou", "labels", "scores", "boxes", "iou"}
    assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["mean_iou"] <= 1.0
    assert result["boxes"].shape == (8, 4) and result["iou"].shape == (8,)
    perfect = localization.evaluate_localizer(model, images, result["labels"], result["boxes"])
    assert perfect["accuracy"] == 1.0
    assert perfect["mean_iou"] == pytest.approx(1.0, rel=1e-5)

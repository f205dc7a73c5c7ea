"""Classification + localization: one object per image, a class head and a box head.

The model is a backbone (a feature extractor) with two heads on its feature map:
- ``"label"``: global average pooling and a softmax over the K classes;
- ``"box"``: the flattened feature map (flattening keeps *where* a feature fired)
  and a sigmoid layer of 4 numbers, the box as normalised ``(cx, cy, w, h)``: the
  centre and the size divided by the image width and height, so every target is in
  ``[0, 1]`` whatever the image size, and a sigmoid output can never give a negative
  width (nothing stops a raw ``(x1, y1, x2, y2)`` output from having ``x2 < x1``).

Training minimises ``L = L_cls + alpha * L_box`` with ``L_cls`` the sparse categorical
cross-entropy and ``L_box`` the mean absolute error (L1) on the normalised box:
``compile_localizer`` passes ``alpha`` to Keras as the box output's loss weight.
Boxes in and out are float32 pixel ``(x1, y1, x2, y2)`` (``utils.boxes``).
Introduced in notebook 06.
"""

from __future__ import annotations

import keras
import numpy as np

from utils import boxes as box_ops
from utils.checks import check_count, check_number, check_pair

OUTPUTS = ("label", "box")
"""The localizer's output names, the same keys as ``utils.shapes.to_tf_dataset`` targets."""


def _scale(image_size) -> np.ndarray:
    height, width = check_pair("image_size", image_size)
    return np.array([width, height, width, height], dtype=np.float32)


def encode_boxes(boxes, image_size) -> np.ndarray:
    """Pixel ``(x1, y1, x2, y2)`` ``[N, 4]`` to the box head's targets: normalised
    ``(cx, cy, w, h)`` float32 ``[N, 4]`` in ``[0, 1]``. Introduced in notebook 06."""
    return (box_ops.xyxy_to_cxcywh(np.asarray(boxes, np.float32)) / _scale(image_size)).astype(
        np.float32
    )


def decode_boxes(predictions, image_size) -> np.ndarray:
    """The box head's normalised ``(cx, cy, w, h)`` ``[N, 4]`` back to pixel
    ``(x1, y1, x2, y2)`` float32 ``[N, 4]``; inverse of ``encode_boxes``.
    Introduced in notebook 06."""
    predictions = np.asarray(predictions, np.float32) * _scale(image_size)
    return box_ops.cxcywh_to_xyxy(predictions).astype(np.float32)


def build_localizer(
    backbone: keras.Model,
    num_classes: int,
    *,
    input_shape: tuple[int, int, int] | None = None,
    box_channels: int = 16,
    box_hidden: int = 64,
    name: str = "localizer",
) -> keras.Model:
    """Backbone + class head + box head: a model with outputs ``{"label", "box"}``.

    ``backbone`` maps images ``[B, H, W, 3]`` to a feature map ``[B, h, w, C]``. The box
    head flattens the map, so the input size must be fixed: ``input_shape`` ``(H, W, 3)``,
    by default the backbone's own when it is fixed. The class head is global
    average pooling + ``Dense(num_classes, softmax)``; the box head a 1x1 convolution
    to ``box_channels``, flattening, ``Dense(box_hidden, relu)`` and ``Dense(4,
    sigmoid)`` (normalised ``cx, cy, w, h``). The backbone is used as a layer, so its
    weights train with the heads unless ``backbone.trainable`` is False.
    Introduced in notebook 06.
    """
    check_count("num_classes", num_classes, minimum=2)
    if input_shape is None:
        input_shape = tuple(backbone.input.shape[1:])
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or not all(isinstance(v, int) and v > 0 for v in input_shape):
        raise ValueError(
            f"input_shape={input_shape!r}: expected a fixed (height, width, channels) "
            "(the backbone's input size is not fixed, so pass input_shape)"
        )
    images = keras.Input(input_shape, name="image")
    features = backbone(images)
    if len(features.shape) != 4:
        raise ValueError(
            f"backbone output shape {tuple(features.shape)}: expected a feature map "
            "(batch, h, w, channels)"
        )
    pooled = keras.layers.GlobalAveragePooling2D(name="class_pool")(features)
    label = keras.layers.Dense(num_classes, activation="softmax", name="label")(pooled)
    x = keras.layers.Conv2D(box_channels, 1, activation="relu", name="box_reduce")(features)
    x = keras.layers.Flatten(name="box_flatten")(x)
    x = keras.layers.Dense(box_hidden, activation="relu", name="box_hidden")(x)
    box = keras.layers.Dense(4, activation="sigmoid", name="box")(x)
    return keras.Model(images, {"label": label, "box": box}, name=name)


def compile_localizer(model: keras.Model, alpha: float, *, learning_rate=1e-3) -> None:
    """Compile for ``L = L_cls + alpha * L_box`` (cross-entropy + alpha * L1), Adam.

    ``learning_rate``: a number or a ``keras.optimizers.schedules`` schedule.

    Keras sums the outputs' losses times their ``loss_weights``: ``{"label": 1, "box":
    alpha}``. Logged as ``label_loss`` and ``box_loss`` (unweighted) plus ``loss`` (the
    weighted sum) and ``label_accuracy``. Introduced in notebook 06.
    """
    check_number("alpha", alpha, 0.0)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={"label": "sparse_categorical_crossentropy", "box": "mean_absolute_error"},
        loss_weights={"label": 1.0, "box": float(alpha)},
        metrics={"label": ["accuracy"]},
    )


def evaluate_localizer(model: keras.Model, images, labels, boxes, *, batch_size: int = 128):
    """Classification accuracy and mean IoU on a set; also the per-image predictions.

    Returns a dict: ``accuracy`` and ``mean_iou`` (floats), ``labels`` int32 ``[N]``,
    ``scores`` float32 ``[N]`` (the winning class's probability), ``boxes`` float32
    pixel ``[N, 4]`` and ``iou`` float32 ``[N]``. Introduced in notebook 06.
    """
    images = np.asarray(images)
    # Direct calls rather than model.predict: a sweep evaluates many models, and each
    # predict() would trace a new function (and warn about retracing).
    outputs = [
        model(images[i : i + batch_size], training=False) for i in range(0, len(images), batch_size)
    ]
    probabilities = np.concatenate([np.asarray(o["label"]) for o in outputs])
    predicted_labels = probabilities.argmax(axis=1).astype(np.int32)
    boxes_out = np.concatenate([np.asarray(o["box"]) for o in outputs])
    predicted_boxes = decode_boxes(boxes_out, images.shape[1:3])
    overlaps = box_ops.paired_iou(predicted_boxes, np.asarray(boxes, np.float32))
    return {
        "accuracy": float(np.mean(predicted_labels == np.asarray(labels))),
        "mean_iou": float(overlaps.mean()),
        "labels": predicted_labels,
        "scores": probabilities.max(axis=1).astype(np.float32),
        "boxes": predicted_boxes,
        "iou": overlaps,
    }


def weight_groups(model: keras.Model) -> dict[str, list]:
    """The localizer's trainable weights by part: ``"backbone"``, ``"class head"`` and
    ``"box head"`` (the layers ``build_localizer`` names). Introduced in notebook 06."""
    heads = {"class head": ("label",), "box head": ("box_reduce", "box_hidden", "box")}
    groups = {
        part: [w for name in names for w in model.get_layer(name).trainable_weights]
        for part, names in heads.items()
    }
    head_ids = {id(w) for weights in groups.values() for w in weights}
    groups = {
        "backbone": [w for w in model.trainable_weights if id(w) not in head_ids],
        **groups,
    }
    return groups


def loss_gradient_norms(model: keras.Model, images, labels, box_targets) -> dict[str, dict]:
    """Which weights each loss moves: the gradient norm of ``L_cls`` and of ``L_box``
    with respect to each part of ``weight_groups(model)``, on one batch.

    Returns ``{"L_cls": {part: norm}, "L_box": {part: norm}}``; a part a loss does not
    reach gets exactly 0. Uses ``tf.GradientTape`` (TensorFlow backend). Introduced in
    notebook 06.
    """
    import tensorflow as tf

    groups = weight_groups(model)
    images = tf.convert_to_tensor(images)
    losses = {
        "L_cls": keras.losses.SparseCategoricalCrossentropy(),
        "L_box": keras.losses.MeanAbsoluteError(),
    }
    targets = {"L_cls": ("label", labels), "L_box": ("box", box_targets)}
    norms = {}
    for loss_name, loss in losses.items():
        output, target = targets[loss_name]
        with tf.GradientTape() as tape:
            predictions = model(images, training=False)
            value = loss(target, predictions[output])
        parts = list(groups)
        gradients = tape.gradient(value, [groups[p] for p in parts])
        norms[loss_name] = {
            part: float(np.sqrt(sum(float(tf.reduce_sum(g**2)) for g in grads if g is not None)))
            for part, grads in zip(parts, gradients, strict=True)
        }
    return norms

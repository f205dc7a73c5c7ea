"""What a detector trained end to end through ``fit`` needs besides its own parts.

Faster R-CNN (notebook 09) and the one-stage detector (notebook 11) are both a
subclassed ``keras.Model`` around the course backbone, trained with ``compile`` and
``fit`` on ``utils.detection_data.training_batches``. Their networks and losses differ;
this class holds the rest: the per-loss trackers the logs show, a ``train_step`` that
sums the terms of ``batch_losses`` and takes one optimizer step, the backbone's feature
map (BatchNorm statistics frozen), its XLA-compiled one-image form for timing, and the
image check. A piece, not a detector: it knows no detector and no dataset, as
torchvision's ``GeneralizedRCNN`` is the frame of its R-CNNs. Introduced in notebook 09.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from utils.anchors import generate_anchors
from utils.checks import check_count, check_pair, check_rgb_images
from utils.detection_data import training_batches
from utils.training import EpochPrinter, fit_with_adam


def from_backbone_config(cls, config: dict):
    """``cls(**config)`` with the serialised backbone in ``config["backbone"]`` rebuilt first:
    the ``from_config`` of every detector model that wraps the course backbone."""
    config = dict(config)
    config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
    return cls(**config)


class EndToEndDetector(keras.Model):
    """Base of a detector model whose every weight exists after ``__init__``.

    A subclass calls ``track_losses(names)`` in its ``__init__`` and defines
    ``batch_losses(images, boxes, labels) -> {name: scalar}`` (training mode, padded
    ground truth as ``utils.shapes.to_tf_dataset`` gives it); ``fit`` then logs
    ``loss`` (their sum) and every term. ``image_size`` ``(H, W)`` is the subclass's.
    """

    image_size: tuple[int, int]
    _parts = None  # the compiled inference stages, built on first use (``compiled_parts``)

    def set_up_anchors(
        self,
        backbone: keras.Model,
        num_classes: int,
        feature_stride: int,
        image_size: Sequence[int],
        anchor_sizes: Sequence[float],
        anchor_ratios: Sequence[float],
    ) -> tuple:
        """Keep the backbone and fix the anchors: ``anchor_sizes`` x ``anchor_ratios`` at
        every cell of the backbone's feature map of ``image_size`` images
        (``utils.anchors.generate_anchors``). Returns that feature map's shape
        ``(1, h, w, C)``, or raises a one-line error when the backbone gives none."""
        check_count("feature_stride", feature_stride)
        image_size = check_pair("image_size", tuple(image_size))
        feature_shape = tuple(backbone.compute_output_shape((1, *image_size, 3)))
        if len(feature_shape) != 4 or None in feature_shape[1:]:
            raise ValueError(
                f"backbone output shape {feature_shape} for {image_size} images: expected a "
                "feature map [B, h, w, C]"
            )
        self.backbone = backbone
        self.num_classes = check_count("num_classes", num_classes)
        self.feature_stride = int(feature_stride)
        self.image_size = image_size
        self.feature_size = feature_shape[1:3]
        self.anchor_sizes = tuple(float(s) for s in anchor_sizes)
        self.anchor_ratios = tuple(float(r) for r in anchor_ratios)
        self.anchors = generate_anchors(
            *self.feature_size, self.feature_stride, self.anchor_sizes, self.anchor_ratios
        )
        self.num_anchors = len(self.anchor_sizes) * len(self.anchor_ratios)
        return feature_shape

    def get_config(self):
        """The backbone (serialised) and the anchor settings; a subclass adds its own."""
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            num_classes=self.num_classes,
            feature_stride=self.feature_stride,
            image_size=self.image_size,
            anchor_sizes=self.anchor_sizes,
            anchor_ratios=self.anchor_ratios,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return from_backbone_config(cls, config)

    def track_losses(self, names: Sequence[str]) -> None:
        """One running mean per logged value: ``loss`` and each of ``names``."""
        self.loss_names = tuple(names)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", *names)}

    def build(self, input_shape=None):
        # Every weight exists after __init__, so a saved model loads without a call.
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    def features(self, images):
        """The backbone's feature map of pixel images ``[B, H, W, 3]`` (0..255)."""
        return self.backbone(ops.cast(images, "float32"), training=False)

    def batch_losses(self, images, boxes, labels) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must define batch_losses")

    def train_step(self, data):
        images, targets = data[0], data[1]
        with tf.GradientTape() as tape:
            losses = self.batch_losses(images, targets["boxes"], targets["labels"])
            loss = sum(losses.values())
            # Gradients are summed over replicas: each contributes its share of the mean.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss / replicas)
        gradients = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        self.trackers["loss"].update_state(loss)
        for name in self.loss_names:
            self.trackers[name].update_state(losses[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def fit_recipe(self, data, recipe, printer: EpochPrinter, *, verbose: bool = True) -> dict:
        """Train as ``recipe`` says (its ``images_per_batch``, ``seed``, flips, ``epochs``,
        ``learning_rate``): Adam with a cosine-decaying rate (``utils.training.
        fit_with_adam``) on ``training_batches``; returns the Keras history (per-epoch
        ``loss`` and each term). The targets are made in NumPy inside the step
        (``tf.numpy_function``), which XLA cannot compile, so ``jit_compile=False`` on
        every device."""
        dataset = training_batches(
            data,
            images_per_batch=recipe.images_per_batch,
            seed=recipe.seed,
            horizontal_flip=recipe.horizontal_flip,
            vertical_flip=getattr(recipe, "vertical_flip", False),
        )
        return fit_with_adam(
            self,
            dataset,
            epochs=recipe.epochs,
            steps_per_epoch=max(int(dataset.cardinality()), 1),
            learning_rate=recipe.learning_rate,
            printer=printer,
            verbose=verbose,
            shuffle=False,
            jit_compile=False,
        )

    def compiled_backbone(self):
        """``features`` as a ``tf.function`` for one uint8 image of ``image_size``,
        XLA-compiled (the form the detectors are timed with)."""
        return tf.function(
            self.features,
            input_signature=[tf.TensorSpec((1, *self.image_size, 3), "uint8")],
            jit_compile=True,
        )

    def blank_image(self) -> np.ndarray:
        """One black uint8 image of ``image_size``, batched: what ``warm_up`` compiles on."""
        return np.zeros((1, *self.image_size, 3), np.uint8)

    def checked_images(self, images) -> np.ndarray:
        """``images`` as a uint8 array ``[N, H, W, 3]`` of ``image_size``, or a clear error."""
        return check_rgb_images(images, size=self.image_size)

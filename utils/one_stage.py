"""A one-stage detector (RetinaNet's conventions, Lin et al., 2017) on the course backbone.

Faster R-CNN (``utils.faster_rcnn``) works in two stages: the RPN proposes boxes, then the
RoI head pools each proposal and classifies it. A one-stage detector drops the second
stage: a small dense head on the same stride-8 feature map predicts, at every anchor,
``K`` sigmoid class scores (one per shape, no background class) and four box deltas, and
the detections are those anchors' decoded boxes after a score threshold and NMS.
- anchors: ``utils.anchors.generate_anchors`` with the RPN's sizes and ratios;
- targets (``anchor_targets``): ``utils.matching.match_boxes`` with RetinaNet's rule
  (positive at IoU >= 0.5, background below 0.4, ignored in between, plus each object's
  best anchor when that IoU is > 0); deltas coded with ``utils.boxes.encode``, weights 1;
- loss (``one_stage_loss``): ``utils.losses.sigmoid_focal_loss`` over every non-ignored
  anchor and class, divided by the number of positive anchors, plus smooth L1 on the
  positives' deltas. Focal loss (alpha 0.25, gamma 2) or plain binary cross-entropy (the
  same formula with alpha 0.5, gamma 0): the recipe's ``alpha`` and ``gamma``;
- inference (``detect``): sigmoid scores, decode, then ``utils.roi_heads.select_detections``
  (score > 0.05, top 1000, per-class NMS at 0.5, top 100).

Trained with ``fit`` through ``OneStageDetector.train_step`` (targets in NumPy through
``tf.numpy_function``, so ``jit_compile=False``), cached like the other detectors
(``utils.detection_data.CachedDetector``). Introduced in notebook 11.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from utils import boxes as box_ops
from utils.cache import TrainingInfo
from utils.checks import (
    check_choice,
    check_count,
    check_fraction,
    check_number,
)
from utils.course import DATA_DIR, mode_settings
from utils.detection_data import TRAINING_IMAGES, CachedDetector
from utils.detector_model import EndToEndDetector
from utils.losses import SMOOTH_L1_BETA, one_stage_loss
from utils.matching import label_proposals
from utils.profiling import time_per_image
from utils.roi_heads import NUM_CLASSES, Detections, select_detections
from utils.rpn import ANCHOR_RATIOS, ANCHOR_SIZES
from utils.shapes import ShapesData
from utils.training import EpochPrinter

ONE_STAGE_CACHE_DIR = DATA_DIR / "one_stage"
POSITIVE_IOU = 0.5
"""An anchor is an object's (positive) at IoU >= this with it (RetinaNet's 0.5)."""
NEGATIVE_IOU = 0.4
"""An anchor is background when its best IoU is below this (RetinaNet's 0.4)."""
BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
"""Box-coding weights of the head's deltas (the RPN's)."""
PRIOR_PROBABILITY = 0.01
"""Every class score starts near this (the class bias is -log((1 - pi) / pi))."""
SCORE_THRESHOLD = 0.05
PRE_NMS_TOP_N = 1000
NMS_THRESHOLD = 0.5
MAX_DETECTIONS = 100
"""Inference: RetinaNet's score > 0.05, top 1000 before NMS, per-class NMS 0.5, top 100."""
LOSS_NAMES = ("class_loss", "box_loss")
LOSSES = MappingProxyType({"focal": (0.25, 2.0), "cross_entropy": (0.5, 0.0)})
"""``(alpha, gamma)`` of the two losses notebook 11 trains with (RetinaNet's focal loss;
plain binary cross-entropy, halved by alpha = 0.5 on both sides)."""


# ---- targets and loss -------------------------------------------------------------------


def anchor_targets(
    anchors: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    *,
    positive_iou: float = POSITIVE_IOU,
    negative_iou: float = NEGATIVE_IOU,
) -> tuple[np.ndarray, np.ndarray]:
    """One image's anchor targets: ``(anchor_labels int32 [N], box_targets float32 [N, 4])``.

    ``utils.matching.label_proposals`` with ``allow_low_quality_matches`` (that is
    ``match_boxes(iou, positive_iou, negative_iou, allow_low_quality_matches=True)``) on the IoU of the ground truth ``boxes
    [G, 4]`` (0-based class ``labels [G]``; rows with a negative label are padding and
    left out) with the ``anchors [N, 4]``. Labels use ``utils.matching``'s table:
    ``c + 1`` for an anchor of class ``c``, ``BACKGROUND`` (0), ``IGNORED`` (-1) between
    the thresholds. Positives regress onto their box (``encode``, ``BOX_WEIGHTS``); the
    other rows of ``box_targets`` are 0.
    """
    anchors = np.asarray(anchors, np.float32).reshape(-1, 4)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(boxes):
        raise ValueError(
            f"labels has {len(labels)} entries and boxes {len(boxes)} rows: expected one label per box"
        )
    real = labels >= 0
    result = label_proposals(
        anchors,
        boxes[real],
        labels[real],
        foreground_iou=positive_iou,
        background_iou=negative_iou,
        weights=BOX_WEIGHTS,
        allow_low_quality_matches=True,
    )
    return result.labels.astype(np.int32), result.regression_targets


def _batch_targets(anchors, boxes, labels):
    """``anchor_targets`` for every image of a padded batch (NumPy, for ``tf.numpy_function``)."""
    pairs = [anchor_targets(anchors, *image) for image in zip(boxes, labels, strict=True)]
    return (
        np.stack([p[0] for p in pairs]).astype(np.int32),
        np.stack([p[1] for p in pairs]).astype(np.float32),
    )


# ---- the model --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="course")
class OneStageHead(keras.layers.Layer):
    """RetinaNet's head, small: a class tower and a box tower over the feature map.

    Each tower is ``depth`` 3x3 convolutions of ``channels`` (ReLU), then a 3x3
    convolution to ``A * K`` class logits or ``A * 4`` deltas for the ``A =
    num_anchors`` anchors of every position. Weights start as N(0, 0.01); the class bias
    as ``-log((1 - prior) / prior)`` so every score starts at ``prior`` (RetinaNet's
    initialisation: without it the many background anchors swamp the first steps).
    Call: ``features [B, H, W, C] -> (class_logits [B, H * W * A, K], deltas [B, H * W *
    A, 4])`` in ``generate_anchors``' order (row, column, anchor).
    """

    def __init__(
        self,
        num_anchors: int,
        num_classes: int = NUM_CLASSES,
        channels: int = 128,
        depth: int = 1,
        prior: float = PRIOR_PROBABILITY,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_anchors = check_count("num_anchors", num_anchors)
        self.num_classes = check_count("num_classes", num_classes)
        self.channels = check_count("channels", channels)
        self.depth = check_count("depth", depth, minimum=0)
        self.prior = check_number("prior", prior, 0.0, 1.0, low_open=True, high_open=True)

        def tower(name):
            return [
                keras.layers.Conv2D(
                    self.channels,
                    3,
                    padding="same",
                    activation="relu",
                    kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                    name=f"{name}_conv{index + 1}",
                )
                for index in range(self.depth)
            ]

        self.class_tower, self.box_tower = tower("class"), tower("box")
        self.class_logits = keras.layers.Conv2D(
            self.num_anchors * self.num_classes,
            3,
            padding="same",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer=keras.initializers.Constant(-np.log((1 - self.prior) / self.prior)),
            name="class_logits",
        )
        self.box_deltas = keras.layers.Conv2D(
            self.num_anchors * 4,
            3,
            padding="same",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="box_deltas",
        )

    def build(self, features_shape):
        for tower, output in (
            (self.class_tower, self.class_logits),
            (self.box_tower, self.box_deltas),
        ):
            shape = tuple(features_shape)
            for layer in tower:
                layer.build(shape)
                shape = (*shape[:-1], self.channels)
            output.build(shape)
        self.built = True

    def call(self, features):
        batch = ops.shape(features)[0]
        x = features
        for layer in self.class_tower:
            x = layer(x)
        logits = ops.reshape(self.class_logits(x), (batch, -1, self.num_classes))
        x = features
        for layer in self.box_tower:
            x = layer(x)
        deltas = ops.reshape(self.box_deltas(x), (batch, -1, 4))
        return logits, deltas

    def compute_output_shape(self, features_shape):
        batch, height, width = features_shape[:3]
        count = None if height is None or width is None else height * width * self.num_anchors
        return (batch, count, self.num_classes), (batch, count, 4)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_anchors=self.num_anchors,
            num_classes=self.num_classes,
            channels=self.channels,
            depth=self.depth,
            prior=self.prior,
        )
        return config


@keras.saving.register_keras_serializable(package="course")
class OneStageDetector(EndToEndDetector):
    """The one-stage detector: backbone, then ``OneStageHead`` at every anchor; no proposals.

    ``backbone`` maps pixel images ``[B, H, W, 3]`` (0..255) to a feature map of stride
    ``feature_stride``; ``image_size`` ``(H, W)`` fixes the anchors (``anchor_sizes`` x
    ``anchor_ratios`` at every cell). The backbone runs with ``training=False`` (frozen
    BatchNorm statistics, as in Faster R-CNN); its weights train. ``alpha`` and ``gamma``
    choose the class loss (``one_stage_loss``). ``model(images)`` returns ``{"class_logits"
    [B, N, K], "box_deltas" [B, N, 4]}``; ``detect`` / ``detect_images`` turn them into
    ``Detections``. Training: ``compile(optimizer)`` and ``fit`` on
    ``utils.shapes.to_tf_dataset`` batches; the logs hold ``loss``, ``class_loss``,
    ``box_loss``. Introduced in notebook 11.
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_classes: int = NUM_CLASSES,
        *,
        feature_stride: int,
        image_size: Sequence[int] = (128, 128),
        anchor_sizes: Sequence[float] = ANCHOR_SIZES,
        anchor_ratios: Sequence[float] = ANCHOR_RATIOS,
        head_channels: int = 128,
        head_depth: int = 1,
        alpha: float | None = 0.25,
        gamma: float = 2.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.alpha = _check_alpha(alpha)
        self.gamma = check_number("gamma", gamma, 0.0)
        feature_shape = self.set_up_anchors(
            backbone, num_classes, feature_stride, image_size, anchor_sizes, anchor_ratios
        )
        self.head = OneStageHead(
            self.num_anchors, self.num_classes, head_channels, head_depth, name="head"
        )
        self.head.build(feature_shape)
        self.track_losses(LOSS_NAMES)
        self.built = True

    def call(self, images, training=False):
        logits, deltas = self.head(self.features(images))
        return {"class_logits": logits, "box_deltas": deltas}

    def targets(self, boxes, labels):
        """``anchor_targets`` of a padded batch, in the graph: ``(labels [B, N], targets [B, N, 4])``."""
        count = len(self.anchors)
        anchor_labels, box_targets = tf.numpy_function(
            _batch_targets,
            [self.anchors, ops.cast(boxes, "float32"), ops.cast(labels, "int32")],
            (tf.int32, tf.float32),
            stateful=False,
        )
        return (
            tf.ensure_shape(anchor_labels, (None, count)),
            tf.ensure_shape(box_targets, (None, count, 4)),
        )

    def batch_losses(self, images, boxes, labels):
        """``one_stage_loss`` of one batch with this model's ``alpha`` and ``gamma``."""
        outputs = self(images, training=True)
        anchor_labels, box_targets = self.targets(boxes, labels)
        return one_stage_loss(
            outputs["class_logits"],
            outputs["box_deltas"],
            anchor_labels,
            box_targets,
            alpha=self.alpha,
            gamma=self.gamma,
        )

    # -- inference --------------------------------------------------------------------

    def compiled_parts(self):
        """The two network stages for one image, XLA-compiled (as Faster R-CNN's backbone):
        ``backbone(images [1, H, W, 3] uint8) -> features`` and ``head(features) ->
        (scores [N, K] sigmoid, deltas [N, 4])``."""
        if self._parts is None:

            def head(features):
                logits, deltas = self.head(features)
                return ops.sigmoid(logits[0]), deltas[0]

            self._parts = (
                self.compiled_backbone(),
                tf.function(head, jit_compile=True),
            )
        return self._parts

    def warm_up(self) -> None:
        """Compile the inference stages."""
        backbone, head = self.compiled_parts()
        head(backbone(self.blank_image()))

    def class_logits(self, images, batch_size: int = 16) -> np.ndarray:
        """The class logits ``[N_images, N_anchors, K]`` of ``images`` (NumPy, batched)."""
        images = self.checked_images(images)
        parts = [
            np.asarray(self(images[start : start + batch_size])["class_logits"])
            for start in range(0, len(images), batch_size)
        ]
        return (
            np.concatenate(parts) if parts else np.zeros((0, len(self.anchors), self.num_classes))
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            head_channels=self.head.channels,
            head_depth=self.head.depth,
            alpha=self.alpha,
            gamma=self.gamma,
        )
        return config


def _check_alpha(alpha):
    return None if alpha is None else check_fraction("alpha", alpha)


def postprocess(
    scores: np.ndarray,
    deltas: np.ndarray,
    anchors: np.ndarray,
    image_size: tuple[int, int],
    **options,
) -> Detections:
    """The head's outputs for one image to ``Detections``: decode every anchor's deltas (one
    box per anchor for all classes, RetinaNet's class-agnostic regression), then
    ``utils.roi_heads.select_detections`` with RetinaNet's defaults (score >
    ``SCORE_THRESHOLD``, top ``PRE_NMS_TOP_N``, per-class NMS at ``NMS_THRESHOLD``, top
    ``MAX_DETECTIONS``); ``options`` override them."""
    scores = np.asarray(scores, np.float32)
    anchors = np.asarray(anchors, np.float32).reshape(-1, 4)
    if scores.ndim != 2 or len(scores) != len(anchors):
        raise ValueError(
            f"scores has shape {scores.shape}: expected [{len(anchors)}, K], one row per anchor"
        )
    settings = {
        "score_threshold": SCORE_THRESHOLD,
        "nms_threshold": NMS_THRESHOLD,
        "max_detections": MAX_DETECTIONS,
        "pre_nms_top_n": PRE_NMS_TOP_N,
        **options,
    }
    # Only anchors with a class above the threshold can give a detection: decode just those.
    candidates = np.flatnonzero(scores.max(axis=1, initial=0.0) > settings["score_threshold"])
    deltas = np.asarray(deltas, np.float32).reshape(-1, 4)[candidates]
    boxes = np.asarray(box_ops.decode(deltas, anchors[candidates], weights=BOX_WEIGHTS))
    return select_detections(boxes, scores[candidates].T, image_size, **settings)


def detect(model: OneStageDetector, image: np.ndarray, **options) -> Detections:
    """The one-stage detector on one image ``[H, W, 3]``: ``Detections`` (boxes, labels,
    scores); ``options`` go to ``postprocess``. Introduced in notebook 11."""
    (image,) = model.checked_images(np.asarray(image)[None])
    backbone, head = model.compiled_parts()
    scores, deltas = (np.asarray(t) for t in head(backbone(image[None])))
    return postprocess(scores, deltas, model.anchors, image.shape[:2], **options)


def detect_images(
    model: OneStageDetector, images: np.ndarray, *, progress: bool = True, **options
) -> tuple[list[Detections], dict[str, float]]:
    """The one-stage detector on every image, one at a time, timed: ``(detections, timing)``.

    ``timing`` (``utils.profiling.time_per_image``) holds seconds per image for
    ``"backbone"``, ``"head"`` (the dense head at every anchor) and ``"postprocess"``
    (decode, threshold, NMS), their sum ``"total"`` and ``"detection"`` (the same: there is
    no proposal stage); ``"proposals_per_image"`` counts the anchors the head scores.
    ``warm_up`` and one untimed image come first, so compiling is not counted.
    Introduced in notebook 11.
    """
    images = model.checked_images(images)
    backbone, head = model.compiled_parts()
    if len(images):
        model.warm_up()
        detect(model, images[0], **options)

    def detect_one(index, timer):
        image = images[index]
        with timer("backbone"):
            features = backbone(image[None])
        with timer("head"):
            scores, deltas = (np.asarray(t) for t in head(features))
        with timer("postprocess"):
            detections = postprocess(scores, deltas, model.anchors, image.shape[:2], **options)
        return detections, len(model.anchors)

    return time_per_image(
        len(images),
        detect_one,
        ("backbone", "head", "postprocess"),
        description="one-stage detection",
        progress=progress,
    )


# ---- how it is trained, and its cache ------------------------------------------------


@dataclass(frozen=True)
class OneStageRecipe:
    """How the one-stage detector is built and trained; every field is in the cache key.

    Head: ``head_channels`` and ``head_depth`` (``OneStageHead``), the anchors
    (``anchor_sizes`` x ``anchor_ratios``, the RPN's by default). Loss: ``alpha`` and
    ``gamma`` of ``utils.losses.sigmoid_focal_loss`` (``LOSSES``). Training:
    ``images_per_batch`` images per step, ``epochs`` over the training images, Adam from
    ``learning_rate`` decaying to 0 along a cosine, left-right mirroring at random
    (``horizontal_flip``), ``seed`` for every random choice. Introduced in notebook 11.
    """

    alpha: float | None = 0.25
    gamma: float = 2.0
    head_channels: int = 128
    head_depth: int = 1
    anchor_sizes: tuple[float, ...] = ANCHOR_SIZES
    anchor_ratios: tuple[float, ...] = ANCHOR_RATIOS
    images_per_batch: int = 4
    epochs: int = 12
    learning_rate: float = 5e-4
    horizontal_flip: bool = True
    seed: int = 0

    def __post_init__(self):
        _check_alpha(self.alpha)
        check_number("gamma", self.gamma, 0.0)
        for name in ("head_channels", "images_per_batch", "epochs"):
            check_count(name, getattr(self, name))
        check_count("head_depth", self.head_depth, minimum=0)
        check_number("learning_rate", self.learning_rate, 0.0, low_open=True)

    @property
    def loss_name(self) -> str:
        """``"focal"`` or ``"cross_entropy"`` (gamma 0), for names and file names."""
        return "focal" if self.gamma > 0 else "cross_entropy"

    def with_loss(self, loss: str) -> OneStageRecipe:
        """This recipe with the ``(alpha, gamma)`` of ``LOSSES[loss]``."""
        alpha, gamma = LOSSES[check_choice("loss", loss, tuple(LOSSES))]
        return replace(self, alpha=alpha, gamma=gamma)


@dataclass(frozen=True)
class OneStageSettings:
    """``load_one_stage``'s training set size and recipe (all in the cache key)."""

    num_images: int
    recipe: OneStageRecipe


SETTINGS = MappingProxyType(
    {
        "full": OneStageSettings(TRAINING_IMAGES["full"], OneStageRecipe()),
        # Fast mode (the tests): two epochs on the small set, a model good only for running the code.
        "fast": OneStageSettings(TRAINING_IMAGES["fast"], OneStageRecipe(epochs=2)),
    }
)


def build_one_stage(
    backbone: keras.Model,
    feature_stride: int,
    recipe: OneStageRecipe | None = None,
    num_classes: int = NUM_CLASSES,
    image_size: Sequence[int] = (128, 128),
) -> OneStageDetector:
    """A ``OneStageDetector`` with the head, anchors and loss of ``recipe`` (default: full
    mode's, focal loss). Introduced in notebook 11."""
    recipe = recipe or SETTINGS["full"].recipe
    return OneStageDetector(
        backbone,
        num_classes,
        feature_stride=feature_stride,
        image_size=image_size,
        anchor_sizes=recipe.anchor_sizes,
        anchor_ratios=recipe.anchor_ratios,
        head_channels=recipe.head_channels,
        head_depth=recipe.head_depth,
        alpha=recipe.alpha,
        gamma=recipe.gamma,
        name=f"one_stage_{recipe.loss_name}",
    )


def train_one_stage(
    model: OneStageDetector, data: ShapesData, recipe: OneStageRecipe, *, verbose: bool = True
) -> dict[str, list[float]]:
    """Adam (cosine-decayed learning rate) through ``train_step``; the Keras history
    (per-epoch ``loss``, ``class_loss``, ``box_loss``; ``EndToEndDetector.fit_recipe``).
    Introduced in notebook 11."""
    printer = EpochPrinter({"class": "class_loss", "box": "box_loss"})
    return model.fit_recipe(data, recipe, printer, verbose=verbose)


def _fit_one_stage(settings, backbone, stride, data, proposals, verbose):
    recipe = settings.recipe
    model = build_one_stage(backbone, stride, recipe, image_size=data.images.shape[1:3])
    return model, train_one_stage(model, data, recipe, verbose=verbose), len(data)


#: The one-stage detector trained on the shared training images from a copy of the
#: course backbone, cached under ``data/one_stage/one_stage_<loss>-<mode>-<key>.keras``;
#: the key holds the settings (loss and recipe) and the target and inference constants.
#: Introduced in notebook 11.
ONE_STAGE = CachedDetector(
    lambda settings: f"one-stage detector ({settings.recipe.loss_name.replace('_', '-')})",
    ONE_STAGE_CACHE_DIR,
    lambda settings: f"one_stage_{settings.recipe.loss_name}",
    SETTINGS,
    _fit_one_stage,
    key_parts={
        "one_stage": [POSITIVE_IOU, NEGATIVE_IOU, BOX_WEIGHTS, SMOOTH_L1_BETA, PRIOR_PROBABILITY]
    },
)


def load_one_stage(
    loss: str | None = "focal",
    *,
    mode: str | None = None,
    settings: OneStageSettings | None = None,
    retrain: bool = False,
    verbose: bool = True,
) -> tuple[OneStageDetector, TrainingInfo]:
    """The trained one-stage detector of a mode and ``loss`` (``"focal"`` or
    ``"cross_entropy"``), from its cache or trained now (``ONE_STAGE.load``, which prints
    what it did). ``settings`` (default ``SETTINGS[mode]``) trains a variant (other
    anchors, another gamma); ``loss`` sets its ``alpha`` and ``gamma`` unless it is None
    (then ``settings``' own are used). Returns ``(model, utils.cache.TrainingInfo)``.
    Introduced in notebook 11.
    """
    mode, settings = mode_settings(mode, settings, ONE_STAGE.settings)
    if loss is not None:
        settings = replace(settings, recipe=settings.recipe.with_loss(loss))
    return ONE_STAGE.load(mode=mode, settings=settings, retrain=retrain, verbose=verbose)

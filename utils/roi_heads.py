"""The RoI head of Fast and Faster R-CNN: the head, its training targets and loss, and the
post-processing of its outputs into detections.

Modelled on torchvision's ``models/detection/roi_heads.py``. What the detectors share:
- ``FastRCNNHead``: RoI pooling (or RoIAlign) of each region on the feature map, fully
  connected layers, a ``K + 1``-way classifier (index 0 is background) and a
  class-specific box regressor (``4K`` deltas coded with ``BOX_WEIGHTS``);
- ``CompiledHead``: the head XLA-compiled for inference, RoI counts padded to a few buckets;
- ``sample_rois`` and ``RoISample``: one image's training RoIs (proposals + ground truth,
  IoU-labelled, 25 % foreground);
- ``fast_rcnn_loss``: cross-entropy + smooth L1 on the true class's deltas;
- ``Detections`` and ``postprocess_detections``: softmax scores and deltas to boxes, per
  class decode, clip, drop empty boxes, score threshold, NMS, top-k. R-CNN's patch
  classifier (notebook 07) has the same outputs and uses the same post-processing.

Introduced in notebook 08 (the head, sampling and loss) and 07 (post-processing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from utils import boxes as box_ops
from utils.checks import check_choice, check_count, check_fraction, check_number
from utils.course import quiet_tensorflow_logs
from utils.layers import RoIAlign, RoIPooling
from utils.losses import smooth_l1, true_class_deltas
from utils.matching import BACKGROUND, IGNORED, label_proposals, sample_balanced
from utils.shapes import CLASS_NAMES

NUM_CLASSES = len(CLASS_NAMES)
"""K, the shape classes; a RoI classifier has K + 1 outputs, index 0 is background."""
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
"""The RoI head's box-coding weights (torchvision's and the papers')."""
POOL_SIZE = 4
"""RoI pooling grid (the paper's 7 x 7 over VGG16's stride-16 map of a 600-pixel image;
the shapes images and their feature maps are small, so a coarser grid)."""
HIDDEN_UNITS = (256, 256)
"""The head's fully connected layers (the paper's fc6 and fc7 have 4096 units)."""
FOREGROUND_FRACTION = 0.25
"""Share of foreground RoIs in a training sample (the papers' 25 %)."""
SMOOTH_L1_BETA = 1.0
"""Where the head's smooth L1 turns from quadratic to linear (the Fast R-CNN paper's 1)."""
POOLING_METHODS = ("roi_pool", "roi_align")
SCORE_THRESHOLD = 0.05
"""Detections scoring at most this are dropped (torchvision's 0.05)."""
NMS_THRESHOLD = 0.3
"""Per-class NMS IoU threshold (the R-CNN and Fast R-CNN papers' 0.3)."""
MAX_DETECTIONS = 100
"""Detections kept per image, best first."""
MIN_BOX_SIZE = 1e-2
"""Detections narrower or shorter than this (in pixels) after clipping are dropped
(torchvision's ``remove_small_boxes(boxes, 1e-2)``: a box decoded off the image)."""
ROI_BUCKETS = (32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
"""The RoI counts ``CompiledHead`` pads to (at most a third of the rows are padding)."""


# ---- the recipe Fast and Faster R-CNN share ---------------------------------------------


@dataclass(frozen=True)
class TrainingRecipe:
    """The RoI head and how a two-stage detector trains it: one recipe for Fast and Faster
    R-CNN, so that notebook 10's comparison changes only what the detectors are about.

    Head: ``pooling`` (``"roi_pool"`` or ``"roi_align"``), ``pool_size``, ``hidden_units``,
    ``dropout`` (``FastRCNNHead``). Training: ``images_per_batch`` images per step, each
    with ``rois_per_image`` sampled RoIs of which at most ``foreground_fraction`` are
    foreground (``sample_rois``); ``epochs`` over the training images, Adam with its
    learning rate decaying from ``learning_rate`` to 0 along a cosine; images mirrored at
    random left-right (``horizontal_flip``) and top-bottom (``vertical_flip``), boxes with
    them (a mirrored shape keeps its class); ``seed`` for every random choice. The papers'
    values differ (Fast R-CNN: 2 images x 64 RoIs, left-right flips only; Faster R-CNN: 1-2
    images x 128-256 RoIs); these suit the course's small images and CPU. Introduced in
    notebook 08.
    """

    pooling: str = "roi_align"
    pool_size: int = POOL_SIZE
    hidden_units: tuple[int, ...] = HIDDEN_UNITS
    dropout: float = 0.0
    images_per_batch: int = 4
    rois_per_image: int = 64
    foreground_fraction: float = FOREGROUND_FRACTION
    epochs: int = 12
    learning_rate: float = 1e-3
    horizontal_flip: bool = True
    vertical_flip: bool = True
    seed: int = 0

    def __post_init__(self):
        check_choice("pooling", self.pooling, POOLING_METHODS)
        for name in ("images_per_batch", "rois_per_image", "epochs"):
            check_count(name, getattr(self, name))
        check_fraction("foreground_fraction", self.foreground_fraction)

    def head_options(self) -> dict:
        """The ``FastRCNNHead`` arguments of this recipe."""
        return {
            "pooling": self.pooling,
            "pool_size": self.pool_size,
            "hidden_units": tuple(self.hidden_units),
            "dropout": self.dropout,
        }


RECIPES = MappingProxyType(
    {
        "full": TrainingRecipe(),
        # Fast mode (the tests): two epochs, a model good only for running the code.
        "fast": TrainingRecipe(epochs=2),
    }
)
"""The shared recipe of each mode; each detector picks its RoI op on top (``pooling``)."""


# ---- the head ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="course")
class FastRCNNHead(keras.layers.Layer):
    """Fast R-CNN's RoI head: RoI pooling, fully connected layers, classifier and regressor.

    Call: ``head(features [B, H, W, C], rois [R, 5]) -> (class_logits [R, K + 1],
    box_deltas [R, 4K])``, RoIs in ``utils.layers``' layout (rows ``(batch_index, x1, y1,
    x2, y2)`` in input-image pixels). Class ``c``'s deltas are columns ``4c .. 4c + 3``;
    softmax is left to the loss and to inference.

    Args:
        num_classes: K, the object classes (the classifier has K + 1 outputs).
        spatial_scale: 1 / the backbone's stride: image pixels to feature-map cells.
        pool_size: the RoI grid, an int or ``(height, width)``.
        hidden_units: one ``Dense(units, relu)`` per entry, each followed by ``dropout``.
        dropout: dropout rate after each fully connected layer.
        pooling: ``"roi_pool"`` (``utils.layers.RoIPooling``: Fast R-CNN's max pooling over
            whole cells) or ``"roi_align"`` (``utils.layers.RoIAlign`` with
            ``aligned=True`` and 2 x 2 bilinear samples per bin: Mask R-CNN's RoIAlign with
            Detectron2's half-pixel correction).

    As in the paper, the classifier starts from N(0, 0.01) weights and the regressor from
    N(0, 0.001). Introduced in notebook 08; Faster R-CNN (notebook 09) uses it too.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        *,
        spatial_scale: float,
        pool_size: int | tuple[int, int] = POOL_SIZE,
        hidden_units: Sequence[int] = HIDDEN_UNITS,
        dropout: float = 0.0,
        pooling: str = "roi_pool",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = check_count("num_classes", num_classes)
        self.hidden_units = tuple(check_count("hidden_units", units) for units in hidden_units)
        self.dropout = check_fraction("dropout", dropout, high_open=True)
        self.pooling = check_choice("pooling", pooling, POOLING_METHODS)
        if pooling == "roi_pool":
            self.roi_pool = RoIPooling(pool_size, spatial_scale, name="roi_pool")
        else:
            self.roi_pool = RoIAlign(
                pool_size, spatial_scale, sampling_ratio=2, aligned=True, name="roi_align"
            )
        self.pool_size = self.roi_pool.pool_size
        self.spatial_scale = self.roi_pool.spatial_scale
        self.fully_connected = [
            keras.layers.Dense(units, activation="relu", name=f"fc{index + 1}")
            for index, units in enumerate(self.hidden_units)
        ]
        self.dropouts = [
            keras.layers.Dropout(self.dropout, name=f"dropout{index + 1}")
            for index in range(len(self.hidden_units))
        ]
        self.classifier = keras.layers.Dense(
            self.num_classes + 1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="class_logits",
        )
        self.box_regressor = keras.layers.Dense(
            4 * self.num_classes,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            name="box_deltas",
        )

    def build(self, features_shape, rois_shape=None):
        width = self.pool_size[0] * self.pool_size[1] * int(features_shape[-1])
        for layer, units in zip(self.fully_connected, self.hidden_units, strict=True):
            layer.build((None, width))
            width = units
        self.classifier.build((None, width))
        self.box_regressor.build((None, width))
        self.built = True

    def call(self, features, rois, training=None):
        pooled = self.roi_pool(features, rois)
        x = ops.reshape(pooled, (ops.shape(pooled)[0], -1))
        for dense, dropout in zip(self.fully_connected, self.dropouts, strict=True):
            x = dropout(dense(x), training=training)
        return self.classifier(x), self.box_regressor(x)

    def compute_output_shape(self, features_shape, rois_shape):
        return (rois_shape[0], self.num_classes + 1), (rois_shape[0], 4 * self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(self.options())
        return config

    def options(self) -> dict:
        """The constructor arguments that define the head (what a detector saves)."""
        return {
            "num_classes": self.num_classes,
            "spatial_scale": self.spatial_scale,
            "pool_size": self.pool_size,
            "hidden_units": self.hidden_units,
            "dropout": self.dropout,
            "pooling": self.pooling,
        }


def roi_bucket(count: int) -> int:
    """The row count ``CompiledHead`` pads ``count`` RoIs to: the first of ``ROI_BUCKETS``
    that holds them (beyond the last, the next multiple of it)."""
    for bucket in ROI_BUCKETS:
        if count <= bucket:
            return bucket
    return -(-count // ROI_BUCKETS[-1]) * ROI_BUCKETS[-1]


class CompiledHead:
    """A ``FastRCNNHead`` for inference: ``(features, rois [R, 5]) -> (probabilities, deltas)``.

    NumPy out: softmax class probabilities ``[R, K + 1]`` and deltas ``[R, 4K]``. The head
    runs XLA-compiled (``jit_compile=True``), which fuses RoI pooling's many small ops
    (notebook 08 measures the difference). XLA compiles once per input shape, so the RoI
    rows are padded with zero boxes up to ``roi_bucket(R)`` and the padding rows' outputs
    dropped; ``warm_up`` compiles the buckets in advance so a timed call never compiles.
    Introduced in notebook 08; Faster R-CNN (notebook 09) runs its head through it too.
    """

    def __init__(self, head: FastRCNNHead):
        self.head = head
        self._functions = {}

    def _run(self, bucket: int, features, rois):
        """The head on ``rois`` padded to ``bucket`` rows, through that bucket's compiled graph."""
        if bucket in self._functions:
            return self._functions[bucket](features, rois)

        def probabilities_and_deltas(features, rois):
            class_logits, box_deltas = self.head(features, rois, training=False)
            return ops.softmax(class_logits, axis=-1), box_deltas

        self._functions[bucket] = tf.function(probabilities_and_deltas, jit_compile=True)
        with quiet_tensorflow_logs():  # tracing one graph per bucket is the point
            return self._functions[bucket](features, rois)

    def __call__(self, features, rois) -> tuple[np.ndarray, np.ndarray]:
        rois = np.asarray(rois, np.float32).reshape(-1, 5)
        bucket = roi_bucket(len(rois))
        padded = np.zeros((bucket, 5), np.float32)
        padded[: len(rois)] = rois
        probabilities, deltas = self._run(bucket, features, padded)
        return np.asarray(probabilities)[: len(rois)], np.asarray(deltas)[: len(rois)]

    def warm_up(self, features, max_rois: int) -> None:
        """Compile every bucket up to ``roi_bucket(max_rois)`` for ``features``' shape."""
        for bucket in ROI_BUCKETS:
            if bucket > roi_bucket(max_rois):
                break
            self._run(bucket, features, np.zeros((bucket, 5), np.float32))


# ---- training targets and loss ----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RoISample:
    """One image's sampled training RoIs, padded to a fixed count.

    ``boxes`` float32 ``[S, 4]``; ``labels`` int32 ``[S]`` (``BACKGROUND`` 0, ``c + 1`` for
    class ``c``, ``IGNORED`` -1 for padding rows); ``regression_targets`` float32 ``[S, 4]``
    (zeros unless foreground); ``ious`` float32 ``[S]``, each RoI's best IoU with the ground
    truth.
    """

    boxes: np.ndarray
    labels: np.ndarray
    regression_targets: np.ndarray
    ious: np.ndarray


def sample_rois(
    proposals: np.ndarray,
    ground_truth_boxes: np.ndarray,
    ground_truth_labels: np.ndarray,
    *,
    num_samples: int,
    foreground_fraction: float = FOREGROUND_FRACTION,
    rng: np.random.Generator,
    weights: tuple[float, float, float, float] = BOX_WEIGHTS,
) -> RoISample:
    """Fast R-CNN's RoI sampling for one image: proposals + ground truth, labelled, balanced.

    The ground-truth boxes are appended to the proposals (so every object has at least one
    perfect foreground RoI from the first step on, however poor the proposals are),
    ``utils.matching.label_proposals`` labels them (foreground at IoU >= 0.5 with class and
    deltas, background below: torchvision's range [0, 0.5), where the paper used
    [0.1, 0.5)) and ``sample_balanced`` picks up to ``num_samples``, at most
    ``foreground_fraction`` foreground. Rows past the picked ones are padding (label
    ``IGNORED``, zero box) so every image gives exactly ``num_samples`` rows.
    Introduced in notebook 08; Faster R-CNN (notebook 09) uses it on RPN proposals.
    """
    check_count("num_samples", num_samples)
    check_fraction("foreground_fraction", foreground_fraction)
    proposals = np.asarray(proposals, np.float32).reshape(-1, 4)
    truth = np.asarray(ground_truth_boxes, np.float32).reshape(-1, 4)
    candidates = np.concatenate([proposals, truth])
    targets = label_proposals(candidates, truth, ground_truth_labels, weights=weights)
    chosen = sample_balanced(targets.labels, num_samples, foreground_fraction, rng)
    boxes = np.zeros((num_samples, 4), np.float32)
    labels = np.full(num_samples, IGNORED, np.int32)
    deltas = np.zeros((num_samples, 4), np.float32)
    ious = np.zeros(num_samples, np.float32)
    count = len(chosen)
    boxes[:count] = candidates[chosen]
    labels[:count] = targets.labels[chosen]
    deltas[:count] = targets.regression_targets[chosen]
    ious[:count] = targets.matched_iou[chosen]
    return RoISample(boxes, labels, deltas, ious)


def fast_rcnn_loss(
    labels,
    regression_targets,
    class_logits,
    box_deltas,
    *,
    box_loss_weight: float = 1.0,
    beta: float = SMOOTH_L1_BETA,
):
    """Fast R-CNN's multi-task loss on sampled RoIs: ``{"loss", "class_loss", "box_loss",
    "accuracy"}``.

    ``labels`` int ``[...]`` (``BACKGROUND`` 0, ``c + 1`` for class ``c``, ``IGNORED`` for
    padding rows that count nowhere), ``regression_targets`` ``[..., 4]``, ``class_logits``
    ``[..., K + 1]``, ``box_deltas`` ``[..., 4K]``, any leading shape. ``class_loss``:
    softmax cross-entropy averaged over the valid RoIs; ``box_loss``: smooth L1 (``beta``)
    summed over the four deltas of the true class (``utils.losses.true_class_deltas``),
    over the foreground RoIs only, divided by the number of valid RoIs (torchvision's
    ``fastrcnn_loss``); ``loss = class_loss + box_loss_weight * box_loss`` (the paper's
    lambda = 1); ``accuracy``: the share of valid RoIs classified right (a metric, no
    gradient). ``keras.ops`` throughout, so it works eagerly and inside a model's
    ``compute_loss``. Introduced in notebook 08; Faster R-CNN (notebook 09) uses it too.
    """
    num_classes = class_logits.shape[-1] - 1
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    class_logits = ops.reshape(class_logits, (-1, num_classes + 1))
    deltas = ops.reshape(box_deltas, (-1, 4 * num_classes))
    targets = ops.reshape(ops.cast(regression_targets, deltas.dtype), (-1, 4))
    valid = ops.cast(labels != IGNORED, class_logits.dtype)
    count = ops.maximum(ops.sum(valid), 1.0)
    safe_labels = ops.maximum(labels, BACKGROUND)
    cross_entropy = keras.losses.sparse_categorical_crossentropy(
        safe_labels, class_logits, from_logits=True
    )
    class_loss = ops.sum(cross_entropy * valid) / count
    smooth = smooth_l1(true_class_deltas(deltas, safe_labels) - targets, beta)
    foreground = ops.cast(labels > BACKGROUND, smooth.dtype)
    box_loss = ops.sum(ops.sum(smooth, axis=-1) * foreground) / count
    predicted = ops.cast(ops.argmax(class_logits, axis=-1), "int32")
    correct = ops.cast(predicted == labels, class_logits.dtype) * valid
    return {
        "loss": class_loss + box_loss_weight * box_loss,
        "class_loss": class_loss,
        "box_loss": box_loss,
        "accuracy": ops.stop_gradient(ops.sum(correct) / count),
    }


# ---- inference ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Detections:
    """One image's detections: ``boxes`` float32 ``[D, 4]``, ``labels`` int64 ``[D]``
    (0-based classes), ``scores`` float32 ``[D]``, highest score first. Unpacks as the
    ``(boxes, labels, scores)`` triple ``utils.metrics.mean_average_precision`` takes.
    Introduced in notebook 07."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __iter__(self):
        return iter((self.boxes, self.labels, self.scores))

    def __len__(self) -> int:
        return len(self.scores)


def postprocess_detections(
    probabilities: np.ndarray,
    deltas: np.ndarray,
    proposals: np.ndarray,
    image_size: tuple[int, int],
    **options,
) -> Detections:
    """A RoI classifier's outputs to one image's ``Detections``: per class decode, clip,
    threshold, NMS, top-k (torchvision's ``RoIHeads.postprocess_detections``).

    ``probabilities`` ``[P, K + 1]`` (softmax, index 0 background), ``deltas`` ``[P, 4K]``
    (``BOX_WEIGHTS`` coding), ``proposals`` ``[P, 4]``, ``image_size`` ``(height, width)``.
    For each class ``c`` every proposal becomes the box ``decode(deltas_c, proposal)``
    clipped to the image and scored ``probabilities[:, c + 1]``; boxes scoring at most
    ``score_threshold`` or smaller than ``MIN_BOX_SIZE`` after clipping go; NMS runs per
    class (``utils.boxes.batched_nms``); the best ``max_detections`` over all classes are
    kept: ``select_detections``, which takes the ``options`` (``score_threshold``,
    ``nms_threshold``, ``max_detections``). Introduced in notebook 07 (R-CNN); Fast and Faster
    R-CNN use it too.
    """
    probabilities = np.asarray(probabilities, np.float32)
    proposals = np.asarray(proposals, np.float32).reshape(-1, 4)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise ValueError(
            f"probabilities has shape {probabilities.shape}: expected [P, K + 1] with K >= 1"
        )
    num_classes = probabilities.shape[1] - 1
    if len(probabilities) != len(proposals):
        raise ValueError(
            f"probabilities has {len(probabilities)} rows and proposals {len(proposals)}: "
            "expected one row per proposal"
        )
    deltas = np.asarray(deltas, np.float32)
    if deltas.shape != (len(proposals), 4 * num_classes):
        raise ValueError(
            f"deltas has shape {deltas.shape}: expected [{len(proposals)}, {4 * num_classes}] "
            "(4 per class per proposal)"
        )
    # Class-major order [K, P], so equal scores keep the lower class, then the earlier proposal.
    deltas = deltas.reshape(len(proposals), num_classes, 4).transpose(1, 0, 2)
    boxes = box_ops.decode(deltas, np.broadcast_to(proposals, deltas.shape), weights=BOX_WEIGHTS)
    return select_detections(boxes, probabilities[:, 1:].T, image_size, **options)


def select_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    image_size: tuple[int, int],
    *,
    score_threshold: float = SCORE_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    max_detections: int = MAX_DETECTIONS,
    pre_nms_top_n: int | None = None,
) -> Detections:
    """Candidate boxes and scores per class to one image's ``Detections``.

    ``boxes`` ``[K, P, 4]`` (class ``c``'s box for each of ``P`` candidates, decoded) or
    ``[P, 4]`` (one box per candidate for every class: class-agnostic regression, as in
    RetinaNet), ``scores`` ``[K, P]``. Boxes are clipped to ``image_size`` ``(height,
    width)``; those scoring at most ``score_threshold`` or smaller than ``MIN_BOX_SIZE``
    go; with ``pre_nms_top_n`` only that many best remain (RetinaNet's 1000); NMS runs per
    class (``utils.boxes.batched_nms``); the best ``max_detections`` over all classes are
    kept, highest score first (ties: the lower class, then the earlier candidate). The
    selection step of every detector's post-processing. Introduced in notebook 07.
    """
    scores = np.asarray(scores, np.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores has shape {scores.shape}: expected [K, P]")
    num_classes, count = scores.shape
    boxes = np.asarray(boxes, np.float32)
    if boxes.shape == (count, 4):
        boxes = np.broadcast_to(boxes, (num_classes, count, 4))
    if boxes.shape != (num_classes, count, 4):
        raise ValueError(
            f"boxes has shape {boxes.shape}: expected [{num_classes}, {count}, 4] or [{count}, 4]"
        )
    check_number("score_threshold", score_threshold, 0.0, 1.0)
    check_fraction("nms_threshold", nms_threshold)
    check_count("max_detections", max_detections)
    labels = np.broadcast_to(np.arange(num_classes, dtype=np.int64)[:, None], scores.shape)
    keep = scores > score_threshold
    boxes = box_ops.clip(boxes[keep], *image_size)
    scores, labels = scores[keep], labels[keep]
    large = box_ops.remove_small_boxes(boxes, MIN_BOX_SIZE)
    boxes, scores, labels = boxes[large], scores[large], labels[large]
    if pre_nms_top_n is not None and len(scores) > check_count("pre_nms_top_n", pre_nms_top_n):
        best = np.sort(np.argsort(-scores, kind="stable")[:pre_nms_top_n])
        boxes, scores, labels = boxes[best], scores[best], labels[best]
    chosen = box_ops.batched_nms(boxes, scores, labels, nms_threshold, max_detections)
    return Detections(boxes[chosen], labels[chosen], scores[chosen])

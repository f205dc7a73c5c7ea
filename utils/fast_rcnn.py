"""Fast R-CNN (Girshick, 2015): one CNN pass per image, RoI pooling, a two-output head.

Where R-CNN (``utils.rcnn``) runs the CNN once per warped proposal, Fast R-CNN runs the
backbone once over the whole image and cuts every proposal out of the *feature map*:
1. selective search proposals, computed on the image as in R-CNN (``utils.rcnn.
   detection_proposals``), then projected onto the feature map by ``spatial_scale =
   1 / feature_stride`` inside the RoI pooling layer;
2. ``utils.layers.RoIPooling`` max-pools each projected proposal to a fixed ``PH x PW``
   grid, whatever its size;
3. ``FastRCNNHead``: fully connected layers, then a ``K + 1``-way classifier (index 0 is
   background) and a class-specific box regressor (``4K`` deltas, encoded with the RoI
   head's ``BOX_WEIGHTS`` (10, 10, 5, 5) as ``utils.matching.label_proposals`` makes them);
4. training: per image (mirrored left-right at random), the ground-truth boxes are added
   to the proposals and ``SAMPLES_PER_IMAGE`` RoIs are sampled, 25 % foreground
   (``sample_rois``, ``RoITrainingBatches``); the multi-task loss is cross-entropy +
   smooth L1 on the true class's deltas of the foreground RoIs (``fast_rcnn_loss``),
   both divided by the number of sampled RoIs;
5. inference: softmax, then ``utils.rcnn.postprocess`` (per-class decode, clip, score
   > 0.05, per-class NMS, top 100), the same post-processing R-CNN uses.

The pieces Faster R-CNN reuses (notebook 09) stand alone: ``FastRCNNHead`` (RoI pooling
+ fully connected layers + classifier + regressor, called on any feature map and
``[R, 5]`` RoIs), ``fast_rcnn_loss`` (the head's loss on sampled RoIs), ``sample_rois``
(the head's training targets for one image) and ``postprocess_detections`` (softmax
outputs to detections).

Introduced in notebook 08.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from utils import rcnn
from utils.backbone import backbone_identity, load_course_backbone
from utils.cache import Trained, epoch_printer, load_or_train, mode_name
from utils.course import DATA_DIR, quiet_tensorflow_logs
from utils.layers import RoIAlign, RoIPooling
from utils.matching import label_proposals, sample_balanced
from utils.rcnn import Detections
from utils.shapes import ShapesData

NUM_CLASSES = rcnn.NUM_CLASSES
"""K, the shape classes; the classifier has K + 1 outputs, index 0 is background."""
BOX_WEIGHTS = rcnn.BOX_WEIGHTS
"""The RoI head's box-coding weights (10, 10, 5, 5), as R-CNN's."""
POOL_SIZE = 4
"""RoI pooling grid (the paper's 7 x 7 over VGG16's stride-16 map of a 600-pixel image;
the shapes images and their feature maps are small, so a coarser grid)."""
HIDDEN_UNITS = (256, 256)
"""The head's fully connected layers (the paper's fc6 and fc7 have 4096 units)."""
SAMPLES_PER_IMAGE = 64
"""RoIs sampled per training image (the paper: 64 of a 128-RoI minibatch of 2 images)."""
FOREGROUND_FRACTION = 0.25
SMOOTH_L1_BETA = 1.0
"""Where smooth L1 turns from quadratic to linear (the Fast R-CNN paper's 1)."""
POOLING_METHODS = ("roi_pool", "roi_align")
FAST_RCNN_CACHE_DIR = DATA_DIR / "fast_rcnn"


def _check_count(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")


def _check_fraction(name: str, value) -> None:
    if not isinstance(value, int | float | np.number) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r}: expected a number in [0, 1]")


# ---- the head ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="course")
class FastRCNNHead(keras.layers.Layer):
    """Fast R-CNN's RoI head: RoI pooling, fully connected layers, classifier and regressor.

    ``head(features [B, H, W, C], rois [R, 5]) -> (class_logits [R, K + 1],
    box_deltas [R, 4K])``, RoIs in ``utils.layers``' layout (rows ``(batch_index, x1, y1,
    x2, y2)`` in input-image pixels). Each RoI is pooled to ``pool_size`` with
    ``RoIPooling`` (``pooling="roi_pool"``, Fast R-CNN) or ``RoIAlign`` (``"roi_align"``,
    aligned, 2 samples per bin: Mask R-CNN's refinement) at ``spatial_scale`` (1 / the
    backbone's stride), flattened, passed through ``Dense(units, relu)`` for each entry of
    ``hidden_units`` (with ``dropout`` after each), then two sibling layers: ``K + 1``
    class logits (index 0 background; softmax is left to the loss and to inference) and
    class ``c``'s ``(dx, dy, dw, dh)`` in columns ``4c .. 4c + 3`` of the deltas. As in the
    paper, the classifier starts from N(0, 0.01) weights and the regressor from
    N(0, 0.001). Introduced in notebook 08; Faster R-CNN (notebook 09) reuses it.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        *,
        pool_size: int | tuple[int, int] = POOL_SIZE,
        spatial_scale: float = 1.0 / 16,
        hidden_units: Sequence[int] = HIDDEN_UNITS,
        dropout: float = 0.0,
        pooling: str = "roi_pool",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_count("num_classes", num_classes)
        hidden_units = tuple(hidden_units)
        for units in hidden_units:
            _check_count("hidden_units", units)
        if not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r}: expected a number in [0, 1)")
        if pooling not in POOLING_METHODS:
            raise ValueError(f"pooling={pooling!r}: expected one of {POOLING_METHODS}")
        self.num_classes = int(num_classes)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.dropout = float(dropout)
        self.pooling = pooling
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

    def pool(self, features, rois):
        """The pooled RoIs alone, ``[R, PH, PW, C]`` (what the fully connected layers see)."""
        return self.roi_pool(features, rois)

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
        config.update(
            num_classes=self.num_classes,
            pool_size=self.pool_size,
            spatial_scale=self.spatial_scale,
            hidden_units=self.hidden_units,
            dropout=self.dropout,
            pooling=self.pooling,
        )
        return config


def roi_bucket(count: int) -> int:
    """The RoI count ``CompiledHead`` pads ``count`` up to: 32, 48, 64, 96, 128, 192, ...

    Powers of two and the halves between them, so at most a third of the rows are padding.
    """
    bucket = 32
    while bucket < count:
        bucket = bucket * 3 // 2 if bucket & (bucket - 1) == 0 else bucket * 4 // 3
    return bucket


class CompiledHead:
    """A ``FastRCNNHead`` for inference: ``(features, rois [R, 5]) -> (probabilities, deltas)``.

    NumPy out: softmax class probabilities ``[R, K + 1]`` and deltas ``[R, 4K]``. The head
    runs XLA-compiled (``jit_compile=True``): RoI pooling is dozens of small ops, which
    XLA fuses (about 0.4 ms instead of 1.6 ms for 105 RoIs on this course's 2-core CPU).
    XLA compiles once per input shape, so the RoI rows are padded with zero boxes up to
    ``roi_bucket(R)`` and the padding rows' outputs dropped; ``warm_up`` compiles the
    buckets in advance so a timed call never compiles. Introduced in notebook 08;
    Faster R-CNN (notebook 09) runs its head through it too.
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
        bucket = 0
        while bucket < roi_bucket(max_rois):
            bucket = roi_bucket(bucket + 1)
            self._run(bucket, features, np.zeros((bucket, 5), np.float32))


def roi_pool_bins(
    box, spatial_scale: float, pool_size: int | tuple[int, int], feature_size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """The feature-map cells each of ``RoIPooling``'s bins takes its max over, for one box.

    ``box`` ``(x1, y1, x2, y2)`` in image pixels, ``feature_size`` ``(H, W)``. The rule of
    ``utils.layers.RoIPooling`` (torchvision ``roi_pool``): corners times
    ``spatial_scale`` rounded half away from zero, inclusive end, bin ``i`` spans
    ``[floor(i * bin), ceil((i + 1) * bin))`` cells, clipped to the map. Returns int
    arrays ``"rows"`` ``[PH, 2]`` and ``"columns"`` ``[PW, 2]`` of ``[start, end)`` cell
    ranges, and ``"projected"``, the box on the map before rounding (float ``[4]``), so a
    notebook can draw both. NumPy, for drawing and checking. Introduced in notebook 08.
    """
    pool_height, pool_width = (pool_size, pool_size) if np.isscalar(pool_size) else pool_size
    projected = np.asarray(box, np.float32).reshape(4) * np.float32(spatial_scale)
    corners = np.sign(projected) * np.floor(np.abs(projected) + 0.5)
    edges = {}
    for name, pooled, start, end, size in (
        ("rows", pool_height, corners[1], corners[3], feature_size[0]),
        ("columns", pool_width, corners[0], corners[2], feature_size[1]),
    ):
        bin_size = np.float32(max(end - start + 1, 1)) / np.float32(pooled)
        index = np.arange(pooled, dtype=np.float32)
        low = np.clip(np.floor(index * bin_size) + start, 0, size)
        high = np.clip(np.ceil((index + 1) * bin_size) + start, 0, size)
        edges[name] = np.stack([low, high], axis=1).astype(np.int64)
    edges["projected"] = projected
    return edges


def fast_rcnn_loss(
    labels,
    regression_targets,
    class_logits,
    box_deltas,
    *,
    box_loss_weight: float = 1.0,
    beta: float = SMOOTH_L1_BETA,
):
    """Fast R-CNN's multi-task loss on sampled RoIs: ``{"loss", "class_loss", "box_loss"}``.

    ``labels`` int ``[...]`` (0 background, ``c + 1`` for class ``c``, -1 for padding rows
    that count nowhere), ``regression_targets`` ``[..., 4]``, ``class_logits``
    ``[..., K + 1]``, ``box_deltas`` ``[..., 4K]``, any leading shape. ``class_loss``:
    softmax cross-entropy averaged over the valid RoIs; ``box_loss``: smooth L1
    (``beta``) summed over the four deltas of the true class, over the foreground RoIs
    only, divided by the number of valid RoIs (torchvision's ``fastrcnn_loss``);
    ``loss = class_loss + box_loss_weight * box_loss`` (the paper's lambda = 1).
    ``keras.ops`` throughout, so it works eagerly and inside a model's ``compute_loss``.
    Introduced in notebook 08; Faster R-CNN (notebook 09) reuses it.
    """
    num_classes = class_logits.shape[-1] - 1
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    class_logits = ops.reshape(class_logits, (-1, num_classes + 1))
    deltas = ops.reshape(box_deltas, (-1, num_classes, 4))
    targets = ops.reshape(ops.cast(regression_targets, deltas.dtype), (-1, 4))
    valid = ops.cast(labels >= 0, class_logits.dtype)
    count = ops.maximum(ops.sum(valid), 1.0)
    safe_labels = ops.maximum(labels, 0)
    cross_entropy = keras.losses.sparse_categorical_crossentropy(
        safe_labels, class_logits, from_logits=True
    )
    class_loss = ops.sum(cross_entropy * valid) / count
    chosen = ops.one_hot(ops.maximum(safe_labels - 1, 0), num_classes, dtype=deltas.dtype)
    predicted = ops.sum(deltas * chosen[:, :, None], axis=1)
    difference = ops.abs(predicted - targets)
    smooth = ops.where(difference < beta, 0.5 * difference**2 / beta, difference - 0.5 * beta)
    foreground = ops.cast(labels > 0, smooth.dtype)
    box_loss = ops.sum(ops.sum(smooth, axis=-1) * foreground) / count
    return {
        "loss": class_loss + box_loss_weight * box_loss,
        "class_loss": class_loss,
        "box_loss": box_loss,
    }


# ---- training targets -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RoISample:
    """One image's sampled training RoIs, padded to a fixed count.

    ``boxes`` float32 ``[S, 4]``; ``labels`` int32 ``[S]`` (0 background, ``c + 1`` for
    class ``c``, -1 for padding); ``regression_targets`` float32 ``[S, 4]`` (zeros unless
    foreground); ``ious`` float32 ``[S]``, each RoI's best IoU with the ground truth.
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
    num_samples: int = SAMPLES_PER_IMAGE,
    foreground_fraction: float = FOREGROUND_FRACTION,
    rng: np.random.Generator,
    weights: tuple[float, float, float, float] = BOX_WEIGHTS,
) -> RoISample:
    """Fast R-CNN's RoI sampling for one image: proposals + ground truth, labelled, balanced.

    The ground-truth boxes are appended to the proposals (so every object has at least one
    perfect foreground RoI), ``utils.matching.label_proposals`` labels them (foreground at
    IoU >= 0.5 with class and deltas, background below) and ``sample_balanced`` picks up to
    ``num_samples``, at most ``foreground_fraction`` foreground. Rows past the picked ones
    are padding (label -1, zero box) so every image gives exactly ``num_samples`` rows.
    Introduced in notebook 08; Faster R-CNN (notebook 09) reuses it on RPN proposals.
    """
    _check_count("num_samples", num_samples)
    _check_fraction("foreground_fraction", foreground_fraction)
    proposals = np.asarray(proposals, np.float32).reshape(-1, 4)
    truth = np.asarray(ground_truth_boxes, np.float32).reshape(-1, 4)
    candidates = np.concatenate([proposals, truth])
    targets = label_proposals(candidates, truth, ground_truth_labels, weights=weights)
    chosen = sample_balanced(targets.labels, num_samples, foreground_fraction, rng)
    boxes = np.zeros((num_samples, 4), np.float32)
    labels = np.full(num_samples, -1, np.int32)
    deltas = np.zeros((num_samples, 4), np.float32)
    ious = np.zeros(num_samples, np.float32)
    count = len(chosen)
    boxes[:count] = candidates[chosen]
    labels[:count] = targets.labels[chosen]
    deltas[:count] = targets.regression_targets[chosen]
    ious[:count] = targets.matched_iou[chosen]
    return RoISample(boxes, labels, deltas, ious)


def _mirrored(boxes: np.ndarray, width: int) -> np.ndarray:
    """xyxy boxes of an image mirrored left to right: x -> width - x, corners swapped."""
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


class RoITrainingBatches(keras.utils.PyDataset):
    """Training batches for ``FastRCNN.fit``: a few images each, RoIs sampled afresh per epoch.

    Batch ``i`` is ``(x, y)`` with ``x = {"images": uint8 [B, H, W, 3], "proposals":
    float32 [B, S, 4]}`` and ``y = {"labels": int32 [B, S], "regression_targets": float32
    [B, S, 4]}`` (``sample_rois`` per image, ``S = samples_per_image``): Fast R-CNN's
    hierarchical sampling, N images then R / N RoIs from each, so the RoIs of a batch
    share their images' feature maps. With ``horizontal_flip`` each image is mirrored,
    with its proposals and ground truth, half of the time (the paper's only
    augmentation). The image order, the flips and the samples depend only on ``seed``,
    the epoch and the image, so runs repeat exactly.
    """

    def __init__(
        self,
        data: ShapesData,
        proposals: Sequence[np.ndarray],
        *,
        images_per_batch: int = 2,
        samples_per_image: int = SAMPLES_PER_IMAGE,
        foreground_fraction: float = FOREGROUND_FRACTION,
        horizontal_flip: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        if len(proposals) != len(data):
            raise ValueError(
                f"proposals has {len(proposals)} images and data {len(data)}: expected one per image"
            )
        _check_count("images_per_batch", images_per_batch)
        _check_count("samples_per_image", samples_per_image)
        _check_fraction("foreground_fraction", foreground_fraction)
        self.data = data
        self.proposals = proposals
        self.images_per_batch = images_per_batch
        self.samples_per_image = samples_per_image
        self.foreground_fraction = foreground_fraction
        self.horizontal_flip = bool(horizontal_flip)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.images_per_batch)

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.data))

    def _example(self, image: int):
        """One image's pixels and sampled RoIs for this epoch, mirrored or not."""
        rng = np.random.default_rng([self.seed, self.epoch, image])
        pixels = self.data.images[image]
        proposals = np.asarray(self.proposals[image], np.float32).reshape(-1, 4)
        truth = np.asarray(self.data.boxes[image], np.float32).reshape(-1, 4)
        if self.horizontal_flip and rng.random() < 0.5:
            pixels = pixels[:, ::-1]
            proposals, truth = (_mirrored(boxes, pixels.shape[1]) for boxes in (proposals, truth))
        sample = sample_rois(
            proposals,
            truth,
            self.data.labels[image],
            num_samples=self.samples_per_image,
            foreground_fraction=self.foreground_fraction,
            rng=rng,
        )
        return pixels, sample

    def __getitem__(self, index):
        chosen = self._order()[index * self.images_per_batch : (index + 1) * self.images_per_batch]
        pixels, samples = zip(*(self._example(int(image)) for image in chosen), strict=True)
        x = {"images": np.stack(pixels), "proposals": np.stack([s.boxes for s in samples])}
        y = {
            "labels": np.stack([s.labels for s in samples]),
            "regression_targets": np.stack([s.regression_targets for s in samples]),
        }
        return x, y

    def on_epoch_end(self):
        self.epoch += 1


# ---- the model --------------------------------------------------------------------------


def _checked_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image has shape {image.shape} and dtype {image.dtype}: expected RGB uint8 [H, W, 3]"
        )
    return image


def _image_rois(proposals) -> np.ndarray:
    """One image's boxes ``[P, 4]`` as RoI rows ``[P, 5]`` with batch index 0."""
    proposals = np.asarray(proposals, np.float32).reshape(-1, 4)
    return np.concatenate([np.zeros((len(proposals), 1), np.float32), proposals], axis=1)


def batched_rois(proposals):
    """Per-image boxes ``[B, S, 4]`` to RoI rows ``[B * S, 5]`` of ``(batch_index, x1, y1, x2, y2)``.

    The layout ``utils.layers``' RoI layers and ``FastRCNNHead`` take. Introduced in
    notebook 08.
    """
    proposals = ops.cast(proposals, "float32")
    batch, count = ops.shape(proposals)[0], ops.shape(proposals)[1]
    index = ops.cast(ops.arange(batch), "float32")
    index = ops.broadcast_to(index[:, None, None], (batch, count, 1))
    return ops.reshape(ops.concatenate([index, proposals], axis=-1), (-1, 5))


@keras.saving.register_keras_serializable(package="course")
class FastRCNN(keras.Model):
    """Fast R-CNN: a backbone run once per image and a ``FastRCNNHead`` on its proposals.

    ``model({"images": [B, H, W, 3], "proposals": [B, S, 4]})`` returns
    ``{"class_logits": [B, S, K + 1], "box_deltas": [B, S, 4K]}``; images are pixel
    values 0..255 (uint8 or float), proposals are xyxy boxes in image pixels. The
    ``backbone`` maps images to a feature map ``[B, H / s, W / s, C]`` with
    ``s = feature_stride``, and the head pools proposals at ``spatial_scale = 1 / s``.
    The backbone always runs with ``training=False``: its BatchNorm statistics stay
    frozen, as detectors fine-tune with a few images per batch (torchvision's
    ``FrozenBatchNorm2d``); its weights still train unless ``backbone.trainable`` is
    False.

    Training: ``compile(optimizer)`` then ``fit`` on ``RoITrainingBatches``, whose
    targets ``{"labels", "regression_targets"}`` go to ``compute_loss``
    (``fast_rcnn_loss``); the logs hold ``loss``, ``class_loss``, ``box_loss`` and the
    sampled RoIs' classification ``accuracy``. Inference: ``score_proposals``,
    ``detect`` and ``detect_images``. Introduced in notebook 08.
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_classes: int = NUM_CLASSES,
        *,
        feature_stride: int,
        pool_size: int | tuple[int, int] = POOL_SIZE,
        hidden_units: Sequence[int] = HIDDEN_UNITS,
        dropout: float = 0.0,
        pooling: str = "roi_pool",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_count("feature_stride", feature_stride)
        channels = backbone.output.shape[-1]
        if len(backbone.output.shape) != 4 or channels is None:
            raise ValueError(
                f"backbone output shape {tuple(backbone.output.shape)}: expected a feature "
                "map [B, h, w, C] with a known channel count"
            )
        self.backbone = backbone
        self.feature_stride = int(feature_stride)
        self.head = FastRCNNHead(
            num_classes,
            pool_size=pool_size,
            spatial_scale=1.0 / self.feature_stride,
            hidden_units=hidden_units,
            dropout=dropout,
            pooling=pooling,
            name="head",
        )
        self.head.build((None, None, None, channels), (None, 5))
        self.num_classes = self.head.num_classes
        self.class_loss_tracker = keras.metrics.Mean(name="class_loss")
        self.box_loss_tracker = keras.metrics.Mean(name="box_loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self._inference_functions = {}
        self._compiled_head = CompiledHead(self.head)
        self.built = True

    def build(self, input_shape=None):
        # Every weight exists after __init__ (the backbone is built, the head is built
        # from the backbone's channel count), so loading a saved model needs no call.
        self.built = True

    def features(self, images):
        """The backbone's feature map of pixel images ``[B, H, W, 3]`` (0..255)."""
        return self.backbone(ops.cast(images, "float32"), training=False)

    def call(self, inputs, training=None):
        features = self.features(inputs["images"])
        proposals = ops.cast(inputs["proposals"], "float32")
        class_logits, box_deltas = self.head(features, batched_rois(proposals), training=training)
        shape = ops.shape(proposals)
        return {
            "class_logits": ops.reshape(class_logits, (shape[0], shape[1], self.num_classes + 1)),
            "box_deltas": ops.reshape(box_deltas, (shape[0], shape[1], 4 * self.num_classes)),
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        losses = fast_rcnn_loss(
            y["labels"], y["regression_targets"], y_pred["class_logits"], y_pred["box_deltas"]
        )
        labels = ops.reshape(ops.cast(y["labels"], "int32"), (-1,))
        logits = ops.reshape(y_pred["class_logits"], (-1, self.num_classes + 1))
        predicted = ops.argmax(logits, axis=-1)
        valid = ops.cast(labels >= 0, "float32")
        correct = ops.cast(ops.equal(ops.cast(predicted, "int32"), labels), "float32") * valid
        self.class_loss_tracker.update_state(losses["class_loss"])
        self.box_loss_tracker.update_state(losses["box_loss"])
        self.accuracy_tracker.update_state(ops.sum(correct) / ops.maximum(ops.sum(valid), 1.0))
        return losses["loss"]

    # -- inference ---------------------------------------------------------------------

    def _compiled_parts(self, image_shape):
        """The two inference stages at one image size: ``(backbone, head)``.

        ``backbone``: a ``tf.function`` of ``features`` on one uint8 image, XLA-compiled
        (measured here: 1.2 ms rather than 1.4 ms for a 128-pixel image); ``head``: a
        ``CompiledHead``. R-CNN's patch CNN stays on TensorFlow's default kernels, which
        run its large batches faster than XLA does (16 ms rather than 22 ms for 105
        patches): each detector is timed on its faster path.
        """
        image_shape = tuple(int(n) for n in image_shape)
        if image_shape not in self._inference_functions:
            self._inference_functions[image_shape] = (
                tf.function(
                    self.features,
                    input_signature=[tf.TensorSpec((1, *image_shape), "uint8")],
                    jit_compile=True,
                ),
                self._compiled_head,
            )
        return self._inference_functions[image_shape]

    def warm_up(self, image: np.ndarray, max_proposals: int) -> None:
        """Compile the inference graphs for ``image``'s size and up to ``max_proposals`` RoIs."""
        image = _checked_image(image)
        backbone, head = self._compiled_parts(image.shape)
        head.warm_up(backbone(image[None]), max_proposals)

    def score_proposals(self, image: np.ndarray, proposals: np.ndarray):
        """One image's proposals through the network: ``(probabilities [P, K + 1], deltas [P, 4K])``.

        ``image`` uint8 ``[H, W, 3]``. The backbone runs once on the whole image, the head
        on every proposal; NumPy out.
        """
        image = _checked_image(image)
        backbone, head = self._compiled_parts(image.shape)
        return head(backbone(image[None]), _image_rois(proposals))

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            num_classes=self.num_classes,
            feature_stride=self.feature_stride,
            pool_size=self.head.pool_size,
            hidden_units=self.head.hidden_units,
            dropout=self.head.dropout,
            pooling=self.head.pooling,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def postprocess_detections(
    probabilities: np.ndarray,
    deltas: np.ndarray,
    proposals: np.ndarray,
    image_size: tuple[int, int],
    *,
    score_threshold: float = rcnn.SCORE_THRESHOLD,
    nms_threshold: float = rcnn.NMS_THRESHOLD,
    max_detections: int = rcnn.MAX_DETECTIONS,
) -> Detections:
    """A RoI head's outputs to one image's ``Detections``: decode, clip, threshold, NMS, top-k.

    ``probabilities`` ``[P, K + 1]`` (softmax, index 0 background), ``deltas`` ``[P, 4K]``
    (``BOX_WEIGHTS`` coding), ``proposals`` ``[P, 4]``, ``image_size`` ``(height,
    width)``. torchvision's RoI-head inference, shared with R-CNN
    (``utils.rcnn.postprocess``): per class, decode and clip every proposal's box, keep
    scores above ``score_threshold`` (0.05), NMS at ``nms_threshold`` (the paper's 0.3),
    then the best ``max_detections`` (100) over all classes. Introduced in notebook 08;
    Faster R-CNN (notebook 09) reuses it.
    """
    return rcnn.postprocess(
        probabilities,
        deltas,
        proposals,
        image_size,
        score_threshold=score_threshold,
        nms_threshold=nms_threshold,
        max_detections=max_detections,
    )


def detect(model: FastRCNN, image: np.ndarray, proposals: np.ndarray, **options) -> Detections:
    """Fast R-CNN on one image and its proposals: ``score_proposals`` then ``postprocess_detections``."""
    image = _checked_image(image)
    proposals = np.asarray(proposals, np.float32).reshape(-1, 4)
    probabilities, deltas = model.score_proposals(image, proposals)
    return postprocess_detections(probabilities, deltas, proposals, image.shape[:2], **options)


def detect_images(
    model: FastRCNN,
    images: np.ndarray,
    proposals: Sequence[np.ndarray],
    *,
    progress: bool = True,
    **options,
) -> tuple[list[Detections], dict[str, float]]:
    """``detect`` on every image, timed: ``(detections, timing)``, like ``utils.rcnn.detect_images``.

    ``timing`` holds seconds per image for ``"backbone"`` (one pass over the whole image),
    ``"head"`` (RoI pooling and the fully connected head on every proposal),
    ``"postprocess"`` (decode, clip, NMS), their sum ``"detection"``, plus
    ``"proposals_per_image"``. Proposal time is not included: it comes with the
    proposals. Before timing, the graphs are compiled (``FastRCNN.warm_up``) for the first
    image's size and every RoI count up to the largest, so compiling is not counted.
    """
    if len(images) != len(proposals):
        raise ValueError(
            f"images has {len(images)} entries and proposals {len(proposals)}: expected one per image"
        )
    if len(images):
        model.warm_up(images[0], max(len(np.reshape(p, (-1, 4))) for p in proposals))
        detect(model, images[0], proposals[0], **options)

    def detect_one(index):
        image = _checked_image(images[index])
        boxes = np.asarray(proposals[index], np.float32).reshape(-1, 4)
        backbone, head = model._compiled_parts(image.shape)
        start = time.perf_counter()
        features = backbone(image[None])
        featured = time.perf_counter()
        probabilities, deltas = head(features, _image_rois(boxes))
        scored = time.perf_counter()
        detections = postprocess_detections(
            probabilities, deltas, boxes, image.shape[:2], **options
        )
        seconds = {
            "backbone": featured - start,
            "head": scored - featured,
            "postprocess": time.perf_counter() - scored,
        }
        return detections, seconds, len(boxes)

    results, timing, seen = rcnn.time_per_image(
        len(images),
        detect_one,
        ("backbone", "head", "postprocess"),
        description="Fast R-CNN detection",
        progress=progress,
    )
    timing["detection"] = sum(timing.values())
    timing["proposals_per_image"] = seen / max(len(images), 1)
    return results, timing


# ---- training and the cached model ------------------------------------------------------


@dataclass(frozen=True)
class FastRCNNSettings:
    """How ``load_fast_rcnn`` builds and trains; every field is part of the cache key.

    Adam, its learning rate decaying from ``learning_rate`` to 0 along a cosine over all
    the steps; ``images_per_batch`` images with ``samples_per_image`` RoIs each per step.
    """

    num_images: int
    images_per_batch: int = 2
    samples_per_image: int = SAMPLES_PER_IMAGE
    foreground_fraction: float = FOREGROUND_FRACTION
    horizontal_flip: bool = True
    epochs: int = 10
    learning_rate: float = 1e-3
    pool_size: int = POOL_SIZE
    hidden_units: tuple[int, ...] = HIDDEN_UNITS
    dropout: float = 0.0
    seed: int = 0


SETTINGS = MappingProxyType(
    {
        "full": FastRCNNSettings(num_images=rcnn.TRAINING_IMAGES["full"]),
        "fast": FastRCNNSettings(num_images=rcnn.TRAINING_IMAGES["fast"], epochs=2),
    }
)


def build_fast_rcnn(
    backbone: keras.Model,
    feature_stride: int,
    settings: FastRCNNSettings | None = None,
    num_classes: int = NUM_CLASSES,
) -> FastRCNN:
    """A ``FastRCNN`` with the head sizes of ``settings`` (the full-mode defaults when None)."""
    settings = settings or SETTINGS["full"]
    return FastRCNN(
        backbone,
        num_classes,
        feature_stride=feature_stride,
        pool_size=settings.pool_size,
        hidden_units=settings.hidden_units,
        dropout=settings.dropout,
        name="fast_rcnn",
    )


def train_fast_rcnn(
    model: FastRCNN,
    data: ShapesData,
    proposals: Sequence[np.ndarray],
    settings: FastRCNNSettings,
    *,
    verbose: bool = True,
) -> dict[str, list[float]]:
    """Train as ``settings`` say on ``RoITrainingBatches``; return the Keras history (per-epoch logs).

    Compiles ``model`` with Adam and a cosine-decaying learning rate; the RoIs are
    resampled (and the images flipped) afresh every epoch.
    """
    batches = RoITrainingBatches(
        data,
        proposals,
        images_per_batch=settings.images_per_batch,
        samples_per_image=settings.samples_per_image,
        foreground_fraction=settings.foreground_fraction,
        horizontal_flip=settings.horizontal_flip,
        seed=settings.seed,
    )
    schedule = keras.optimizers.schedules.CosineDecay(
        settings.learning_rate, settings.epochs * len(batches)
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    history = model.fit(
        batches,
        epochs=settings.epochs,
        shuffle=False,
        verbose=0,
        callbacks=[
            epoch_printer(
                {"class": "class_loss", "box": "box_loss"}, accuracy=("RoI accuracy", "accuracy")
            )
        ]
        if verbose
        else [],
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def fast_rcnn_cache_path(fast: bool | None = None) -> Path:
    """Where ``load_fast_rcnn`` keeps a mode's model: ``data/fast_rcnn/fast_rcnn-<mode>-<key>.keras``.

    The key hashes the training settings, the proposal settings, the data and the
    backbone's cache file, so changing any of them retrains instead of loading a stale model.
    """
    mode = mode_name(fast)
    settings = {
        "training": asdict(SETTINGS[mode]),
        "proposals": [rcnn.PROPOSAL_MODE, rcnn.MAX_PROPOSALS],
        "data": [rcnn.DETECTION_SEED, rcnn.DETECTION_DIFFICULTY],
        "boxes": list(BOX_WEIGHTS),
        "backbone": _backbone_identity(fast),
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return FAST_RCNN_CACHE_DIR / f"fast_rcnn-{mode}-{key}.keras"


@dataclass(frozen=True, eq=False)
class FastRCNNInfo:
    """What ``load_fast_rcnn`` did: ``source`` "cache" or "trained", the cache ``path``,
    the training ``history``, ``training_seconds`` (as measured when it was trained), the
    number of training images and the ``settings``."""

    source: str
    path: Path
    history: dict
    training_seconds: float
    num_images: int
    settings: FastRCNNSettings


def load_fast_rcnn(
    *, fast: bool | None = None, retrain: bool = False, verbose: bool = True
) -> tuple[FastRCNN, FastRCNNInfo]:
    """The trained Fast R-CNN of a mode: from ``data/fast_rcnn/`` or trained now.

    On a cache miss (or with ``retrain``) it trains deterministically on the shared
    detection training images (``utils.rcnn.detection_training_set``) and their cached
    selective search proposals, starting from the course backbone, then writes the model
    and its training record atomically (temporary files renamed into place), so a parallel
    run never reads half a file. A cache file that cannot be read is retrained over.
    Full and fast mode are cached separately (``fast`` defaults to the current mode).
    Prints one line saying which it did. Returns ``(model, FastRCNNInfo)``.
    Introduced in notebook 08; notebook 10 reuses it.
    """
    mode = mode_name(fast)
    settings = SETTINGS[mode]
    path = fast_rcnn_cache_path(fast)

    def train() -> Trained:
        data = rcnn.detection_training_set(settings.num_images)
        proposals, _ = rcnn.detection_proposals(data, progress=verbose)
        backbone, stride = fast_rcnn_backbone(fast, verbose)
        keras.utils.set_random_seed(settings.seed)
        model = build_fast_rcnn(backbone, stride, settings)
        start = time.perf_counter()
        history = train_fast_rcnn(model, data, proposals, settings, verbose=verbose)
        return Trained(model, history, len(data), time.perf_counter() - start)

    source, model, record = load_or_train(
        "Fast R-CNN",
        mode,
        path,
        train,
        size_key="num_images",
        training_data=f"{settings.num_images} images",
        retrain=retrain,
        verbose=verbose,
    )
    info = FastRCNNInfo(
        source,
        path,
        record["history"],
        record["training_seconds"],
        record["num_images"],
        settings,
    )
    return model, info


def fast_rcnn_backbone(fast: bool | None = None, verbose: bool = True) -> tuple[keras.Model, int]:
    """The course backbone's feature extractor, as a trainable copy, and its stride.

    ``utils.backbone.load_course_backbone`` of the mode (``fast`` defaults to the current
    one; it prints whether it loaded or trained the backbone), then ``clone_features``:
    fine-tuning Fast R-CNN never changes the cached backbone that R-CNN and the other
    notebooks start from. Introduced in notebook 08.
    """
    course = load_course_backbone(verbose, fast=fast)
    return course.clone_features(), course.stride


def _backbone_identity(fast: bool | None) -> str:
    """What identifies the course backbone's weights, for the cache key."""
    return backbone_identity(fast)

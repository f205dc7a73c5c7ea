"""Faster R-CNN (Ren et al., 2015): the RPN and Fast R-CNN's head on one shared feature map.

Fast R-CNN (``utils.fast_rcnn``) still takes its proposals from selective search, run on
the image. Faster R-CNN proposes them itself, from the feature map the head uses:
1. the backbone runs once over the image -> a feature map ``[B, H / s, W / s, C]``;
2. the RPN (``utils.rpn``) slides over it: objectness and box deltas for every anchor,
   then the ``ProposalLayer`` (decode, clip, drop tiny boxes, top-N, NMS 0.7, top-N);
3. the RoI head of Fast R-CNN (``utils.roi_heads.FastRCNNHead``) pools each proposal from
   the *same* feature map and classifies it (K + 1 classes) with class-specific box
   regression;
4. inference: ``utils.roi_heads.postprocess_detections`` (softmax, per-class decode, clip,
   score > 0.05, per-class NMS, top 100).

Training is *approximate joint training* (the paper's sec. 3.2, torchvision's default):
one ``train_step`` adds the RPN loss (``utils.rpn.rpn_loss`` on 256 sampled anchors) and
the head loss (``utils.roi_heads.fast_rcnn_loss`` on RoIs sampled from the RPN's current
proposals plus the ground truth with ``utils.roi_heads.sample_rois``); the proposals
are treated as constants (no gradient through their coordinates). ``fit`` takes
``utils.shapes.to_tf_dataset`` batches as they are, and the same code runs unchanged
under a ``tf.distribute`` strategy scope (several GPUs; tested on two CPU devices).

Introduced in notebook 09; notebook 10 compares it with R-CNN and Fast R-CNN.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from utils import roi_heads, rpn
from utils.checks import check_count, check_fraction
from utils.course import DATA_DIR
from utils.detection_data import TRAINING_IMAGES, CachedDetector
from utils.detector_model import EndToEndDetector
from utils.layers import boxes_to_rois, image_rois
from utils.matching import IGNORED
from utils.profiling import time_per_image
from utils.shapes import ShapesData
from utils.training import EpochPrinter

FASTER_RCNN_CACHE_DIR = DATA_DIR / "faster_rcnn"
LOSS_NAMES = ("rpn_objectness_loss", "rpn_box_loss", "class_loss", "box_loss")
"""The four terms of the joint loss, as ``fit`` logs them (their sum is ``loss``)."""


def _sample_image_rois(proposals, valid, boxes, labels, seed, *, num_samples, foreground_fraction):
    """``sample_rois`` for one image, called from the graph through ``tf.numpy_function``.

    ``seed`` (the training step and the image's place in the global batch) makes every
    step draw a new, repeatable sample.
    """
    truth = labels != IGNORED
    sample = roi_heads.sample_rois(
        proposals[valid],
        boxes[truth],
        labels[truth],
        num_samples=num_samples,
        foreground_fraction=foreground_fraction,
        rng=np.random.default_rng([int(value) for value in seed]),
    )
    return sample.boxes, sample.labels, sample.regression_targets


@keras.saving.register_keras_serializable(package="course")
class FasterRCNN(EndToEndDetector):
    """Faster R-CNN: backbone, RPN and Fast R-CNN head sharing one feature map.

    ``backbone`` maps pixel images ``[B, H, W, 3]`` (0..255) to a feature map with
    stride ``feature_stride``; ``image_size`` ``(H, W)`` fixes the anchors
    (``utils.anchors.generate_anchors`` with ``anchor_sizes`` x ``anchor_ratios`` at
    every feature-map cell). The backbone runs with ``training=False`` (frozen
    BatchNorm statistics, as in ``utils.fast_rcnn.FastRCNN``); its weights train.

    ``model(images)`` (inference) returns ``{"proposals" [B, P, 4], "proposal_scores"
    [B, P], "proposal_valid" [B, P], "class_probabilities" [B, P, K + 1], "box_deltas"
    [B, P, 4K]}`` with ``P = post_nms_top_n["inference"]``; ``detect`` / ``detect_images``
    turn them into ``Detections`` (boxes, labels, scores). Training: ``compile(optimizer)``
    and ``fit`` on ``(images, {"boxes" [B, M, 4], "labels" [B, M], ...})`` batches
    (``utils.shapes.to_tf_dataset``); the logs hold ``loss`` and its four terms
    ``LOSS_NAMES``.

    Introduced in notebook 09.
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_classes: int = roi_heads.NUM_CLASSES,
        *,
        feature_stride: int,
        image_size: Sequence[int] = (128, 128),
        anchor_sizes: Sequence[float] = rpn.ANCHOR_SIZES,
        anchor_ratios: Sequence[float] = rpn.ANCHOR_RATIOS,
        pre_nms_top_n: dict | None = None,
        post_nms_top_n: dict | None = None,
        rpn_samples_per_image: int = rpn.ANCHORS_PER_IMAGE,
        roi_samples_per_image: int = 64,
        foreground_fraction: float = roi_heads.FOREGROUND_FRACTION,
        pool_size: int | Sequence[int] = roi_heads.POOL_SIZE,
        hidden_units: Sequence[int] = roi_heads.HIDDEN_UNITS,
        dropout: float = 0.0,
        pooling: str = "roi_pool",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_count("rpn_samples_per_image", rpn_samples_per_image)
        check_count("roi_samples_per_image", roi_samples_per_image)
        check_fraction("foreground_fraction", foreground_fraction)
        feature_shape = self.set_up_anchors(
            backbone, num_classes, feature_stride, image_size, anchor_sizes, anchor_ratios
        )
        self.pre_nms_top_n = dict(pre_nms_top_n or rpn.PRE_NMS_TOP_N)
        self.post_nms_top_n = dict(post_nms_top_n or rpn.POST_NMS_TOP_N)
        for name, table in (
            ("pre_nms_top_n", self.pre_nms_top_n),
            ("post_nms_top_n", self.post_nms_top_n),
        ):
            if set(table) != {"training", "inference"}:
                raise ValueError(f"{name}={table}: expected keys 'training' and 'inference'")
        self.rpn_samples_per_image = int(rpn_samples_per_image)
        self.roi_samples_per_image = int(roi_samples_per_image)
        self.foreground_fraction = float(foreground_fraction)
        self.rpn_head = rpn.RPNHead(self.num_anchors, name="rpn_head")
        self.rpn_head.build(feature_shape)
        self.training_proposals = rpn.ProposalLayer(
            self.pre_nms_top_n["training"],
            self.post_nms_top_n["training"],
            name="proposals_training",
        )
        self.inference_proposals = rpn.ProposalLayer(
            self.pre_nms_top_n["inference"], self.post_nms_top_n["inference"], name="proposals"
        )
        self.head = roi_heads.FastRCNNHead(
            self.num_classes,
            spatial_scale=1.0 / self.feature_stride,
            pool_size=pool_size,
            hidden_units=hidden_units,
            dropout=dropout,
            pooling=pooling,
            name="head",
        )
        self.head.build(feature_shape, (None, 5))
        self.seed_generator = keras.random.SeedGenerator(0, name="sampling_seed")
        self.track_losses(LOSS_NAMES)
        self.built = True

    def propose(self, features, training=False):
        """RPN on a feature map: ``(objectness_logits, deltas, (boxes, scores, valid))``."""
        logits, deltas = self.rpn_head(features)
        layer = self.training_proposals if training else self.inference_proposals
        proposals = layer(logits, deltas, self.anchors, image_size=self.image_size)
        return logits, deltas, proposals

    def call(self, images, training=False):
        features = self.features(images)
        _, _, (boxes, scores, valid) = self.propose(features)
        class_logits, box_deltas = self.head(features, boxes_to_rois(boxes), training=False)
        shape = ops.shape(boxes)
        return {
            "proposals": boxes,
            "proposal_scores": scores,
            "proposal_valid": valid,
            "class_probabilities": ops.reshape(
                ops.softmax(class_logits, axis=-1), (shape[0], shape[1], self.num_classes + 1)
            ),
            "box_deltas": ops.reshape(box_deltas, (shape[0], shape[1], 4 * self.num_classes)),
        }

    # -- training ---------------------------------------------------------------------

    def _head_targets(self, proposals, valid, boxes, labels):
        """``sample_rois`` on every image of the batch (NumPy, via ``tf.numpy_function``)."""
        step = tf.cast(self.optimizer.iterations, tf.int64)
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
        count = self.roi_samples_per_image

        sampler = functools.partial(
            _sample_image_rois,
            num_samples=count,
            foreground_fraction=self.foreground_fraction,
        )

        def one_image(inputs):
            image_proposals, image_valid, image_boxes, image_labels, index = inputs
            seed = tf.stack([step, replica, index])
            sampled = tf.numpy_function(
                sampler,
                [image_proposals, image_valid, image_boxes, image_labels, seed],
                (tf.float32, tf.int32, tf.float32),
                stateful=False,
            )
            return (
                tf.ensure_shape(sampled[0], (count, 4)),
                tf.ensure_shape(sampled[1], (count,)),
                tf.ensure_shape(sampled[2], (count, 4)),
            )

        indices = tf.range(tf.shape(proposals)[0], dtype=tf.int64)
        return tf.map_fn(
            one_image,
            (proposals, valid, boxes, tf.cast(labels, tf.int32), indices),
            fn_output_signature=(
                tf.TensorSpec((count, 4), tf.float32),
                tf.TensorSpec((count,), tf.int32),
                tf.TensorSpec((count, 4), tf.float32),
            ),
        )

    def batch_losses(self, images, boxes, labels):
        """The four loss terms of one batch (a dict keyed by ``LOSS_NAMES``), in training mode:
        approximate joint training, the RPN and the head on the same feature map.

        ``boxes [B, M, 4]`` and ``labels [B, M]`` are the padded ground truth (labels < 0
        mark padding), as ``utils.shapes.to_tf_dataset`` gives them.
        """
        boxes = ops.cast(boxes, "float32")
        features = self.features(images)
        logits, deltas, (proposals, _, valid) = self.propose(features, training=True)
        anchor_labels, anchor_targets, _ = rpn.assign_anchor_targets(self.anchors, boxes, labels)
        sampled = rpn.sample_anchors(
            anchor_labels, self.rpn_samples_per_image, seed=self.seed_generator
        )
        objectness_loss, rpn_box_loss = rpn.rpn_loss(
            logits, deltas, anchor_labels, anchor_targets, sampled
        )
        roi_boxes, roi_labels, roi_targets = self._head_targets(proposals, valid, boxes, labels)
        class_logits, box_deltas = self.head(features, boxes_to_rois(roi_boxes), training=True)
        head_losses = roi_heads.fast_rcnn_loss(roi_labels, roi_targets, class_logits, box_deltas)
        return {
            "rpn_objectness_loss": objectness_loss,
            "rpn_box_loss": rpn_box_loss,
            "class_loss": head_losses["class_loss"],
            "box_loss": head_losses["box_loss"],
        }

    # -- inference --------------------------------------------------------------------

    def compiled_parts(self):
        """The three inference stages: ``backbone(images) -> features`` (a ``tf.function``,
        XLA-compiled for one image of ``image_size``, as Fast R-CNN's), ``rpn(features) ->
        (boxes, scores, valid)`` (a ``tf.function`` on TensorFlow's kernels: XLA has no
        dynamic-size NMS) and ``head(features, rois) -> (probabilities, deltas)``
        (``utils.roi_heads.CompiledHead``, NumPy out). ``warm_up`` compiles them."""
        if self._parts is None:

            def rpn_stage(features):
                return self.propose(features)[2]

            self._parts = (
                self.compiled_backbone(),
                tf.function(rpn_stage, reduce_retracing=True),
                roi_heads.CompiledHead(self.head),
            )
        return self._parts

    def warm_up(self) -> None:
        """Compile the inference stages for every proposal count the RPN can give."""
        backbone, rpn_stage, head = self.compiled_parts()
        features = backbone(self.blank_image())
        rpn_stage(features)
        head.warm_up(features, self.post_nms_top_n["inference"])

    def rpn_proposals(self, images, *, top_n: int | None = None) -> list[np.ndarray]:
        """The RPN's proposals for ``images [N, H, W, 3]``: one float32 ``[P_i, 4]`` per image,
        best first (``top_n`` caps the count, default ``post_nms_top_n["inference"]``)."""
        backbone, rpn_stage, _ = self.compiled_parts()
        result = []
        for image in self.checked_images(images):
            boxes, _, valid = (np.asarray(t)[0] for t in rpn_stage(backbone(image[None])))
            result.append(boxes[valid][:top_n])
        return result

    def get_config(self):
        config = super().get_config()
        config.update(
            pre_nms_top_n=self.pre_nms_top_n,
            post_nms_top_n=self.post_nms_top_n,
            rpn_samples_per_image=self.rpn_samples_per_image,
            roi_samples_per_image=self.roi_samples_per_image,
            foreground_fraction=self.foreground_fraction,
            **{
                k: v
                for k, v in self.head.options().items()
                if k not in ("spatial_scale", "num_classes")
            },
        )
        return config


def detect(model: FasterRCNN, image: np.ndarray, **options) -> roi_heads.Detections:
    """Faster R-CNN on one image ``[H, W, 3]``: ``Detections`` (boxes, labels, scores).

    Backbone, RPN proposals, head, then ``utils.roi_heads.postprocess_detections``
    (``options`` go to it: ``score_threshold``, ``nms_threshold``, ``max_detections``).
    Introduced in notebook 09.
    """
    (image,) = model.checked_images(np.asarray(image)[None])
    backbone, rpn_stage, head = model.compiled_parts()
    features = backbone(image[None])
    boxes, _, valid = (np.asarray(t)[0] for t in rpn_stage(features))
    boxes = boxes[valid]
    probabilities, deltas = head(features, image_rois(boxes))
    return roi_heads.postprocess_detections(
        probabilities, deltas, boxes, image.shape[:2], **options
    )


def detect_images(
    model: FasterRCNN,
    images: np.ndarray,
    *,
    progress: bool = True,
    **options,
) -> tuple[list[roi_heads.Detections], dict[str, float]]:
    """Faster R-CNN on every image, one at a time, timed: ``(detections, timing)``.

    ``timing`` holds seconds per image for ``"backbone"`` (the shared feature map),
    ``"rpn"`` (RPN head + proposal layer: the proposal cost on top of the shared
    features), ``"head"`` (RoI pooling and the fully connected head), ``"postprocess"``
    (decode, clip, NMS), their sum ``"total"``, ``"detection"`` (everything but the
    RPN, comparable with ``utils.fast_rcnn.detect_images``' detection time), and
    ``"proposals_per_image"``. ``FasterRCNN.warm_up`` and one untimed image come first, so
    compiling is not counted. Introduced in notebook 09.
    """
    images = model.checked_images(images)
    backbone, rpn_stage, head = model.compiled_parts()
    if len(images):
        model.warm_up()  # compile, so no timed call compiles
        detect(model, images[0], **options)

    def detect_one(index, timer):
        image = images[index]
        with timer("backbone"):
            features = backbone(image[None])
        with timer("rpn"):
            boxes, _, valid = (np.asarray(t)[0] for t in rpn_stage(features))
            boxes = boxes[valid]
        with timer("head"):
            probabilities, deltas = head(features, image_rois(boxes))
        with timer("postprocess"):
            detections = roi_heads.postprocess_detections(
                probabilities, deltas, boxes, image.shape[:2], **options
            )
        return detections, len(boxes)

    return time_per_image(
        len(images),
        detect_one,
        ("backbone", "rpn", "head", "postprocess"),
        description="Faster R-CNN detection",
        proposal_stages=("rpn",),
        progress=progress,
    )


# ---- training and the cached model ------------------------------------------------------


@dataclass(frozen=True)
class FasterRCNNSettings:
    """How ``load_faster_rcnn`` builds and trains; every field is part of the cache key.

    ``recipe``: the RoI head and its training, shared with Fast R-CNN
    (``utils.roi_heads.TrainingRecipe``; here with ``pooling="roi_align"``: Mask R-CNN's
    RoIAlign with Detectron2's half-pixel correction, measured against RoI pooling in
    notebook 09); the RPN's anchors (``anchor_sizes`` x ``anchor_ratios`` at every
    feature-map cell) and the anchors it samples per image for its loss.
    """

    num_images: int
    recipe: roi_heads.TrainingRecipe
    anchor_sizes: tuple[float, ...] = rpn.ANCHOR_SIZES
    anchor_ratios: tuple[float, ...] = rpn.ANCHOR_RATIOS
    rpn_samples_per_image: int = rpn.ANCHORS_PER_IMAGE


SETTINGS = MappingProxyType(
    {
        mode: FasterRCNNSettings(TRAINING_IMAGES[mode], roi_heads.RECIPES[mode])
        for mode in ("full", "fast")
    }
)


def build_faster_rcnn(
    backbone: keras.Model,
    feature_stride: int,
    settings: FasterRCNNSettings | None = None,
    num_classes: int = roi_heads.NUM_CLASSES,
    image_size: Sequence[int] = (128, 128),
) -> FasterRCNN:
    """A ``FasterRCNN`` with the anchors and head of ``settings`` (full mode's when None).

    Introduced in notebook 09.
    """
    settings = settings or SETTINGS["full"]
    return FasterRCNN(
        backbone,
        num_classes,
        feature_stride=feature_stride,
        image_size=image_size,
        anchor_sizes=settings.anchor_sizes,
        anchor_ratios=settings.anchor_ratios,
        rpn_samples_per_image=settings.rpn_samples_per_image,
        roi_samples_per_image=settings.recipe.rois_per_image,
        foreground_fraction=settings.recipe.foreground_fraction,
        name="faster_rcnn",
        **settings.recipe.head_options(),
    )


def train_faster_rcnn(
    model: FasterRCNN,
    data: ShapesData,
    recipe: roi_heads.TrainingRecipe,
    *,
    verbose: bool = True,
) -> dict[str, list[float]]:
    """Approximate joint training with Adam (cosine-decayed learning rate); the Keras history.

    The history holds per-epoch means of ``loss`` and each of ``LOSS_NAMES``
    (``EndToEndDetector.fit_recipe``: the step samples anchors and RoIs in NumPy, so it
    runs without XLA). Introduced in notebook 09.
    """
    printer = EpochPrinter({name.replace("_loss", ""): name for name in LOSS_NAMES})
    return model.fit_recipe(data, recipe, printer, verbose=verbose)


def _fit_faster_rcnn(settings, backbone, stride, data, proposals, verbose):
    model = build_faster_rcnn(backbone, stride, settings, image_size=data.images.shape[1:3])
    history = train_faster_rcnn(model, data, settings.recipe, verbose=verbose)
    return model, history, len(data)


#: Faster R-CNN trained end to end on the shared training images, from a copy of the
#: course backbone; cached under ``data/faster_rcnn/``, the RPN's constants in the key.
#: Introduced in notebook 09; notebooks 10 and 11 reuse it.
FASTER_RCNN = CachedDetector(
    "Faster R-CNN",
    FASTER_RCNN_CACHE_DIR,
    "faster_rcnn",
    SETTINGS,
    _fit_faster_rcnn,
    key_parts={
        "rpn": [
            rpn.POSITIVE_IOU,
            rpn.NEGATIVE_IOU,
            rpn.POSITIVE_FRACTION,
            rpn.NMS_THRESHOLD,
            rpn.PRE_NMS_TOP_N,
            rpn.POST_NMS_TOP_N,
            rpn.MIN_PROPOSAL_SIZE,
        ]
    },
)
#: ``load_faster_rcnn(mode=None, settings=None, retrain=False, verbose=True) -> (model,
#: info)``: the trained Faster R-CNN (``utils.detection_data.CachedDetector.load``);
#: ``settings`` trains a variant (another RoI op, other anchors) under its own key.
load_faster_rcnn = FASTER_RCNN.load

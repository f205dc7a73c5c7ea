"""The region proposal network (RPN) of Faster R-CNN: head, training targets, loss, proposals.

Faster R-CNN (Ren et al., 2015) proposes regions with a small network that slides over
the backbone's *feature map*: at every position a 3x3 convolution, then per anchor one
objectness logit ("object or not") and four box deltas ``(dx, dy, dw, dh)`` that move
the anchor's centre and scale its size (``utils.boxes.encode`` with weights (1, 1, 1, 1)),
not four corners. The pieces follow torchvision's ``models/detection/rpn.py``:

- ``RPNHead``: the 3x3 conv + two 1x1 convs;
- ``assign_anchor_targets``: IoU >= 0.7 positive (or the best anchor of a ground-truth
  box, when that IoU is > 0), < 0.3 negative, the rest ignored - the rule of
  ``utils.matching.match_boxes(..., allow_low_quality_matches=True)``, written with
  tensor ops so it runs inside ``train_step``;
- ``sample_anchors``: 256 anchors per image, at most half positive (the rule of
  ``utils.matching.sample_balanced``, in the graph);
- ``rpn_loss``: binary cross-entropy on the sample + smooth L1 (beta 1/9,
  ``utils.losses.smooth_l1``) on the sampled positives, both normalised by the sample size;
- ``ProposalLayer``: decode, clip, drop tiny boxes, pre-NMS top-N, NMS at 0.7, post-NMS
  top-N, ``stop_gradient``.

Defaults are scaled down from the paper's 1000x600 images to the course's 128x128 shapes.
Every tensor function takes a batch: anchors ``[N, 4]`` are shared by the images,
ground truth comes padded as ``[B, M, 4]`` boxes with labels ``[B, M]`` (-1 past the
count: ``utils.shapes.ShapesData.padded``). Introduced in notebook 09.
"""

from __future__ import annotations

from types import MappingProxyType

import keras
import tensorflow as tf
from keras import ops

from utils import boxes as box_ops
from utils.checks import check_count, check_fraction, check_number, check_threshold_order
from utils.losses import smooth_l1
from utils.matching import BACKGROUND, FOREGROUND, IGNORED

ANCHOR_SIZES = (20, 32, 48)
"""Anchor sizes (square roots of the area) in pixels for 128x128 images (paper: 128, 256, 512)."""
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
"""Anchor aspect ratios, height / width (the paper's)."""
POSITIVE_IOU = 0.7
NEGATIVE_IOU = 0.3
ANCHORS_PER_IMAGE = 256
POSITIVE_FRACTION = 0.5
SMOOTH_L1_BETA = 1.0 / 9.0
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
NMS_THRESHOLD = 0.7
PRE_NMS_TOP_N = MappingProxyType({"training": 1000, "inference": 500})
"""Proposals kept by objectness before NMS (paper: 12000 / 6000 on ~20000 anchors)."""
POST_NMS_TOP_N = MappingProxyType({"training": 200, "inference": 100})
"""Proposals kept after NMS (paper: 2000 in training, 300 at test)."""
MIN_PROPOSAL_SIZE = 2.0
"""Proposals narrower or shorter than this many pixels are dropped."""


@keras.saving.register_keras_serializable(package="course")
class RPNHead(keras.layers.Layer):
    """The RPN's sliding network: 3x3 conv (ReLU), then 1x1 convs for objectness and deltas.

    ``num_anchors`` (``A``) anchors per feature-map position; ``channels`` of the 3x3
    conv (default: the feature map's). Weights start as N(0, 0.01), biases at zero (the
    paper's initialisation). Call: ``features [B, H, W, C] -> (objectness_logits
    [B, H * W * A], deltas [B, H * W * A, 4])``, flattened in ``generate_anchors``' order
    (row, column, anchor).

    Introduced in notebook 09.
    """

    def __init__(self, num_anchors, channels=None, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = check_count("num_anchors", num_anchors)
        if channels is not None:
            check_count("channels", channels)
        self.channels = channels

    def build(self, features_shape):
        channels = self.channels or features_shape[-1]
        init = {
            "kernel_initializer": keras.initializers.RandomNormal(stddev=0.01),
            "bias_initializer": "zeros",
        }
        self.conv = keras.layers.Conv2D(
            channels, 3, padding="same", activation="relu", name="conv", **init
        )
        self.objectness = keras.layers.Conv2D(self.num_anchors, 1, name="objectness", **init)
        self.box_deltas = keras.layers.Conv2D(4 * self.num_anchors, 1, name="box_deltas", **init)
        self.conv.build(features_shape)
        hidden_shape = (*features_shape[:-1], channels)
        self.objectness.build(hidden_shape)
        self.box_deltas.build(hidden_shape)

    def call(self, features):
        hidden = self.conv(features)
        batch = ops.shape(features)[0]
        logits = ops.reshape(self.objectness(hidden), (batch, -1))
        deltas = ops.reshape(self.box_deltas(hidden), (batch, -1, 4))
        return logits, deltas

    def compute_output_shape(self, features_shape):
        batch, height, width = features_shape[:3]
        count = None if height is None or width is None else height * width * self.num_anchors
        return (batch, count), (batch, count, 4)

    def get_config(self):
        config = super().get_config()
        config.update(num_anchors=self.num_anchors, channels=self.channels)
        return config


def _batched_ground_truth(boxes, labels):
    """Ground truth as ``[B, M, 4]`` boxes and a ``[B, M]`` validity mask (labels >= 0)."""
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    if len(boxes.shape) not in (2, 3) or boxes.shape[-1] != 4:
        raise ValueError(
            f"boxes has shape {tuple(boxes.shape)}: expected [M, 4] or [B, M, 4] (x1, y1, x2, y2)"
        )
    if labels is None:
        labels = ops.zeros(ops.shape(boxes)[:-1], "int32")
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) != len(boxes.shape) - 1:
        raise ValueError(
            f"labels has shape {tuple(labels.shape)} and boxes {tuple(boxes.shape)}: "
            "expected one label per box"
        )
    if len(boxes.shape) == 2:
        boxes, labels = boxes[None], labels[None]
    return boxes, labels >= 0


def assign_anchor_targets(
    anchors,
    boxes,
    labels=None,
    *,
    positive_iou=POSITIVE_IOU,
    negative_iou=NEGATIVE_IOU,
    weights=RPN_BOX_WEIGHTS,
):
    """RPN training targets of every anchor: ``(labels, regression_targets, matched_index)``.

    Faster R-CNN's rule, as ``utils.matching.match_boxes(iou, positive_iou, negative_iou,
    allow_low_quality_matches=True)``: an anchor is ``FOREGROUND`` (1) when its best IoU
    with a ground-truth box is >= ``positive_iou``, or when it is (tied for) the best
    anchor of some ground-truth box and that IoU is > 0 - a box that touches no anchor
    claims none; ``BACKGROUND`` (0) when its best IoU is < ``negative_iou``; else
    ``IGNORED`` (-1) (``utils.matching``'s label table). Positives regress onto their best ground-truth box
    (``utils.boxes.encode`` with ``weights``); other rows of the targets are 0.

    ``anchors [N, 4]``; ``boxes [B, M, 4]`` (or ``[M, 4]`` for one image) with ``labels
    [B, M]`` marking padding rows by a negative label (None: all boxes are real).
    Returns int32 ``[B, N]``, float32 ``[B, N, 4]`` and int32 ``[B, N]`` (-1 where no
    box overlaps) as tensors; works eagerly and inside ``tf.function``.

    Introduced in notebook 09.
    """
    check_threshold_order("negative_iou", negative_iou, "positive_iou", positive_iou)
    anchors = ops.cast(ops.convert_to_tensor(anchors), "float32")
    boxes, valid = _batched_ground_truth(boxes, labels)
    # One extra padding row keeps M >= 1, so an image without objects needs no special case.
    boxes = ops.pad(boxes, ((0, 0), (0, 1), (0, 0)))
    valid = ops.pad(valid, ((0, 0), (0, 1)), constant_values=False)
    overlaps = box_ops.batched_iou(boxes, anchors)  # [B, M + 1, N]
    # Padding rows overlap nothing (-1 keeps them below every threshold and below 0).
    overlaps = ops.where(valid[:, :, None], overlaps, -1.0)
    best = ops.max(overlaps, axis=1)  # [B, N]
    matched = ops.cast(ops.argmax(overlaps, axis=1), "int32")
    anchor_labels = ops.where(
        best >= positive_iou, FOREGROUND, ops.where(best < negative_iou, BACKGROUND, IGNORED)
    )
    best_per_box = ops.max(overlaps, axis=2, keepdims=True)  # [B, M + 1, 1]
    claims = (overlaps == best_per_box) & (best_per_box > 0.0)
    anchor_labels = ops.where(ops.any(claims, axis=1), FOREGROUND, anchor_labels)
    anchor_labels = ops.cast(anchor_labels, "int32")
    matched_boxes = ops.take_along_axis(
        boxes, ops.repeat(matched[:, :, None], 4, axis=2), axis=1
    )  # [B, N, 4]
    targets = box_ops.encode(matched_boxes, anchors[None], weights=weights)
    positive = (anchor_labels == FOREGROUND)[:, :, None]
    targets = ops.where(positive, targets, 0.0)
    matched = ops.where(best > 0.0, matched, -1)
    return anchor_labels, targets, matched


def sample_anchors(
    labels,
    num_samples=ANCHORS_PER_IMAGE,
    positive_fraction=POSITIVE_FRACTION,
    *,
    seed=None,
):
    """Pick up to ``num_samples`` anchors per image, at most ``positive_fraction`` positive.

    ``utils.matching.sample_balanced``'s rule on a batch of labels ``[B, N]`` (1 positive,
    0 negative, -1 ignored), written with tensor ops: a random subset of the positives,
    then negatives fill the rest; ignored anchors are never picked. Returns a float32
    mask ``[B, N]`` (1 = in the sample). ``seed``: an int or a ``keras.random.SeedGenerator``
    (a model passes its own, so each training step draws a new sample).

    Introduced in notebook 09.
    """
    check_count("num_samples", num_samples)
    check_fraction("positive_fraction", positive_fraction)
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) != 2:
        raise ValueError(f"labels has shape {tuple(labels.shape)}: expected [B, N]")
    positive = labels == FOREGROUND
    negative = labels == BACKGROUND
    count_positive = ops.sum(ops.cast(positive, "int32"), axis=1, keepdims=True)
    count_negative = ops.sum(ops.cast(negative, "int32"), axis=1, keepdims=True)
    take_positive = ops.minimum(count_positive, int(num_samples * positive_fraction))
    take_negative = ops.minimum(count_negative, num_samples - take_positive)
    noise = keras.random.uniform(ops.shape(labels), seed=seed)

    def random_rank(members):
        # Members get a random order 0, 1, ...; everyone else ranks after them.
        order = ops.argsort(ops.where(members, noise, 2.0), axis=1)
        return ops.argsort(order, axis=1)

    chosen = (positive & (random_rank(positive) < take_positive)) | (
        negative & (random_rank(negative) < take_negative)
    )
    return ops.cast(chosen, "float32")


def rpn_loss(
    objectness_logits, deltas, labels, regression_targets, sampled, *, beta=SMOOTH_L1_BETA
):
    """The RPN loss of a batch: ``(objectness_loss, box_loss)``, two float32 scalars.

    torchvision's ``RegionProposalNetwork.compute_loss``: binary cross-entropy of the
    objectness logits ``[B, N]`` on the sampled anchors (``sampled`` ``[B, N]`` from
    ``sample_anchors``), and smooth L1 with ``beta`` (1/9) of ``deltas [B, N, 4]``
    against ``regression_targets`` on the sampled positives, summed over the 4 deltas;
    both divided by the number of sampled anchors in the batch.

    Introduced in notebook 09.
    """
    sampled = ops.cast(sampled, "float32")
    positive = ops.cast(ops.convert_to_tensor(labels) == FOREGROUND, "float32") * sampled
    count = ops.maximum(ops.sum(sampled), 1.0)
    cross_entropy = ops.binary_crossentropy(
        positive, ops.cast(objectness_logits, "float32"), from_logits=True
    )
    objectness_loss = ops.sum(cross_entropy * sampled) / count
    box = ops.sum(smooth_l1(ops.cast(deltas, "float32") - regression_targets, beta), axis=-1)
    box_loss = ops.sum(box * positive) / count
    return objectness_loss, box_loss


@keras.saving.register_keras_serializable(package="course")
class ProposalLayer(keras.layers.Layer):
    """Turn RPN outputs into region proposals: the best ``post_nms_top_n`` boxes per image.

    Per image (torchvision's ``RegionProposalNetwork.filter_proposals``): the
    ``pre_nms_top_n`` anchors with the highest objectness, their deltas decoded
    (``utils.boxes.decode``, weights (1, 1, 1, 1)), clipped to the image, boxes narrower
    or shorter than ``min_size`` pixels dropped, NMS at ``nms_threshold`` (strict ``>``,
    ``tf.image.non_max_suppression``), the first ``post_nms_top_n`` kept. No gradient
    flows through the proposals (``stop_gradient``): approximate joint training.

    Call: ``layer(objectness_logits [B, N], deltas [B, N, 4], anchors [N, 4],
    image_size=(H, W))`` -> ``(boxes [B, P, 4], scores [B, P], valid [B, P])`` with
    ``P = post_nms_top_n``: each image's proposals in descending objectness (sigmoid
    ``scores``), padded with zero boxes, score 0 and ``valid`` False when fewer survive.

    Introduced in notebook 09.
    """

    def __init__(
        self,
        pre_nms_top_n=PRE_NMS_TOP_N["inference"],
        post_nms_top_n=POST_NMS_TOP_N["inference"],
        nms_threshold=NMS_THRESHOLD,
        min_size=MIN_PROPOSAL_SIZE,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.pre_nms_top_n = check_count("pre_nms_top_n", pre_nms_top_n)
        self.post_nms_top_n = check_count("post_nms_top_n", post_nms_top_n)
        self.nms_threshold = check_fraction("nms_threshold", nms_threshold)
        self.min_size = check_number("min_size", min_size, 0.0)

    def call(self, objectness_logits, deltas, anchors, *, image_size):
        height, width = image_size
        logits = ops.cast(objectness_logits, "float32")
        anchors = ops.cast(ops.convert_to_tensor(anchors), "float32")
        if logits.shape[-1] is not None and anchors.shape[0] != logits.shape[-1]:
            raise ValueError(
                f"anchors has {anchors.shape[0]} rows and objectness_logits "
                f"{logits.shape[-1]} columns: expected one logit per anchor"
            )
        top_n = min(self.pre_nms_top_n, anchors.shape[0])
        top_logits, top_index = ops.top_k(logits, top_n)  # [B, K], sorted
        top_deltas = ops.take_along_axis(
            ops.cast(deltas, "float32"), ops.repeat(top_index[:, :, None], 4, axis=2), axis=1
        )
        top_anchors = ops.take(anchors, top_index, axis=0)
        boxes = box_ops.clip(box_ops.decode(top_deltas, top_anchors), height, width)
        large = box_ops.remove_small_boxes(boxes, self.min_size)
        top_logits = ops.where(large, top_logits, float("-inf"))
        boxes = ops.stop_gradient(boxes)
        top_logits = ops.stop_gradient(top_logits)
        post_n = self.post_nms_top_n
        minimum = float(tf.float32.min)

        def one_image(inputs):
            image_boxes, image_logits = inputs
            keep = tf.image.non_max_suppression(
                box_ops.xyxy_to_yxyx(image_boxes, height, width),
                image_logits,
                max_output_size=post_n,
                iou_threshold=self.nms_threshold,
                score_threshold=minimum,
            )
            count = tf.shape(keep)[0]
            padding = [[0, post_n - count]]
            kept_boxes = tf.pad(tf.gather(image_boxes, keep), [[0, post_n - count], [0, 0]])
            kept_scores = tf.pad(tf.sigmoid(tf.gather(image_logits, keep)), padding)
            valid = tf.range(post_n) < count
            return kept_boxes, kept_scores, valid

        return tf.map_fn(
            one_image,
            (boxes, top_logits),
            fn_output_signature=(
                tf.TensorSpec((post_n, 4), tf.float32),
                tf.TensorSpec((post_n,), tf.float32),
                tf.TensorSpec((post_n,), tf.bool),
            ),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            pre_nms_top_n=self.pre_nms_top_n,
            post_nms_top_n=self.post_nms_top_n,
            nms_threshold=self.nms_threshold,
            min_size=self.min_size,
        )
        return config

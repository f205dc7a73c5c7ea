"""Box arithmetic for detectors: IoU, box coding, clipping, NMS and format conversions.

Boxes are float32 ``[..., 4]`` rows ``(x1, y1, x2, y2)`` in continuous pixel coordinates
(width ``x2 - x1``, no "+1"), as in torchvision.ops. A box with ``x2 < x1`` or
``y2 < y1`` is degenerate: it has zero area and overlaps nothing.

The functions other than ``nms`` are written with ``keras.ops``, so one implementation
serves NumPy code and Keras models alike: NumPy (or list) inputs give NumPy outputs;
any tensor input (eager, inside ``tf.function`` or a Keras model) gives a tensor.

Introduced in notebook 06 (IoU, coding, conversions) and 07 (NMS).
"""

import functools
import math

import keras
import numpy as np
from keras import ops

#: decode clamps log-size deltas here so ``exp`` never overflows (torchvision's value).
MAX_LOG_SCALE = math.log(1000.0 / 16)


def _numpy_in_numpy_out(function):
    """Return NumPy when no argument is a tensor, so NumPy code stays NumPy."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        arguments = [*args, *kwargs.values()]
        if any(ops.is_tensor(a) or isinstance(a, keras.KerasTensor) for a in arguments):
            return result
        return ops.convert_to_numpy(result)

    return wrapper


def _boxes(boxes, name="boxes"):
    """``boxes`` as a float32 tensor, checking the last axis is 4."""
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    if len(boxes.shape) == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [..., 4], got shape {tuple(boxes.shape)}")
    return boxes


def _corners(boxes):
    return ops.unstack(boxes, 4, axis=-1)


@_numpy_in_numpy_out
def area(boxes):
    """Area of each box, 0 for degenerate boxes: ``[..., 4] -> [...]``.

    Introduced in notebook 06.
    """
    x1, y1, x2, y2 = _corners(_boxes(boxes))
    return ops.maximum(x2 - x1, 0.0) * ops.maximum(y2 - y1, 0.0)


@_numpy_in_numpy_out
def iou(boxes_a, boxes_b):
    """Pairwise intersection over union: ``[N, 4], [M, 4] -> [N, M]``.

    torchvision.ops.box_iou semantics (no "+1"); 0 where the union is 0, so degenerate
    and empty boxes overlap nothing and the result is never NaN.

    Introduced in notebook 06.
    """
    boxes_a, boxes_b = _boxes(boxes_a, "boxes_a"), _boxes(boxes_b, "boxes_b")
    for name, boxes in (("boxes_a", boxes_a), ("boxes_b", boxes_b)):
        if len(boxes.shape) != 2:
            raise ValueError(f"{name} must have shape [N, 4], got shape {tuple(boxes.shape)}")
    ax1, ay1, ax2, ay2 = (c[:, None] for c in _corners(boxes_a))
    bx1, by1, bx2, by2 = (c[None, :] for c in _corners(boxes_b))
    width = ops.maximum(ops.minimum(ax2, bx2) - ops.maximum(ax1, bx1), 0.0)
    height = ops.maximum(ops.minimum(ay2, by2) - ops.maximum(ay1, by1), 0.0)
    intersection = width * height
    union = area(boxes_a)[:, None] + area(boxes_b)[None, :] - intersection
    return ops.where(union > 0, intersection / ops.maximum(union, 1e-12), 0.0)


def _centres_and_sizes(boxes):
    x1, y1, x2, y2 = _corners(boxes)
    return (x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1


@_numpy_in_numpy_out
def encode(boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Regression targets that move ``anchors`` onto ``boxes``: ``[..., 4] -> [..., 4]``.

    Faster R-CNN's parametrisation (torchvision BoxCoder): ``dx = wx * (gx - ax) / aw``,
    ``dy = wy * (gy - ay) / ah``, ``dw = ww * log(gw / aw)``, ``dh = wh * log(gh / ah)``
    on centres and sizes. RPN weights are (1, 1, 1, 1), the RoI head's (10, 10, 5, 5).
    Box sizes are floored at 1e-6 so degenerate boxes give large negative, finite
    ``dw``/``dh`` rather than ``-inf`` or NaN.

    Introduced in notebook 06.
    """
    wx, wy, ww, wh = weights
    gx, gy, gw, gh = _centres_and_sizes(_boxes(boxes))
    ax, ay, aw, ah = _centres_and_sizes(_boxes(anchors, "anchors"))
    gw, gh = ops.maximum(gw, 1e-6), ops.maximum(gh, 1e-6)
    return ops.stack(
        [
            wx * (gx - ax) / aw,
            wy * (gy - ay) / ah,
            ww * ops.log(gw / aw),
            wh * ops.log(gh / ah),
        ],
        axis=-1,
    )


@_numpy_in_numpy_out
def decode(deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Boxes from regression ``deltas`` applied to ``anchors``; inverse of ``encode``.

    torchvision BoxCoder.decode: ``dw / ww`` and ``dh / wh`` are clamped at
    ``log(1000 / 16)`` before ``exp`` so a wild prediction cannot overflow.
    Shapes ``[..., 4], [..., 4] -> [..., 4]``.

    Introduced in notebook 06.
    """
    wx, wy, ww, wh = weights
    dx, dy, dw, dh = ops.unstack(_boxes(deltas, "deltas"), 4, axis=-1)
    ax, ay, aw, ah = _centres_and_sizes(_boxes(anchors, "anchors"))
    cx = dx / wx * aw + ax
    cy = dy / wy * ah + ay
    half_w = ops.exp(ops.minimum(dw / ww, MAX_LOG_SCALE)) * aw * 0.5
    half_h = ops.exp(ops.minimum(dh / wh, MAX_LOG_SCALE)) * ah * 0.5
    return ops.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


@_numpy_in_numpy_out
def clip(boxes, height, width):
    """Clip boxes to the image ``[0, width] x [0, height]``: ``[..., 4] -> [..., 4]``.

    torchvision.ops.clip_boxes_to_image semantics.

    Introduced in notebook 06.
    """
    x1, y1, x2, y2 = _corners(_boxes(boxes))
    width = ops.cast(width, "float32")
    height = ops.cast(height, "float32")
    return ops.stack(
        [
            ops.clip(x1, 0.0, width),
            ops.clip(y1, 0.0, height),
            ops.clip(x2, 0.0, width),
            ops.clip(y2, 0.0, height),
        ],
        axis=-1,
    )


def nms(boxes, scores, iou_threshold, max_output_size=None):
    """Greedy non-maximum suppression; kept indices in descending score order.

    torchvision.ops.nms semantics: a box is suppressed when its IoU with an already kept,
    higher-scoring box is strictly greater than ``iou_threshold``; equal scores keep the
    earlier box first. NumPy in and out (``boxes [N, 4]``, ``scores [N]`` -> int64 ``[K]``);
    inside a graph use ``tf.image.non_max_suppression`` on ``xyxy_to_yxyx`` boxes, which
    follows the same rule.

    Introduced in notebook 07.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got shape {boxes.shape}")
    if scores.shape != (len(boxes),):
        raise ValueError(
            f"scores must have shape [{len(boxes)}] to match boxes, got shape {scores.shape}"
        )
    if max_output_size is not None and max_output_size < 0:
        raise ValueError(f"max_output_size must be >= 0 or None, got {max_output_size}")
    limit = len(boxes) if max_output_size is None else max_output_size
    order = np.argsort(-scores, kind="stable")
    overlaps = iou(boxes[order], boxes[order])
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    for rank in range(len(order)):
        if len(kept) == limit:
            break
        if suppressed[rank]:
            continue
        kept.append(order[rank])
        suppressed |= overlaps[rank] > iou_threshold
    return np.array(kept, dtype=np.int64)


@_numpy_in_numpy_out
def xyxy_to_cxcywh(boxes):
    """``(x1, y1, x2, y2)`` to ``(centre x, centre y, width, height)``, ``[..., 4]``.

    Introduced in notebook 06.
    """
    return ops.stack(_centres_and_sizes(_boxes(boxes)), axis=-1)


@_numpy_in_numpy_out
def cxcywh_to_xyxy(boxes):
    """``(centre x, centre y, width, height)`` to ``(x1, y1, x2, y2)``, ``[..., 4]``.

    Introduced in notebook 06.
    """
    cx, cy, w, h = _corners(_boxes(boxes))
    return ops.stack([cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5], axis=-1)


@_numpy_in_numpy_out
def xywh_to_xyxy(boxes):
    """COCO's ``(x, y, width, height)`` to ``(x1, y1, x2, y2)``, ``[..., 4]``.

    Introduced in notebook 06.
    """
    x, y, w, h = _corners(_boxes(boxes))
    return ops.stack([x, y, x + w, y + h], axis=-1)


@_numpy_in_numpy_out
def xyxy_to_xywh(boxes):
    """``(x1, y1, x2, y2)`` to COCO's ``(x, y, width, height)``, ``[..., 4]``.

    Introduced in notebook 06.
    """
    x1, y1, x2, y2 = _corners(_boxes(boxes))
    return ops.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)


@_numpy_in_numpy_out
def xyxy_to_yxyx(boxes, height, width):
    """Pixel ``(x1, y1, x2, y2)`` to TF's normalized ``(y1, x1, y2, x2)``, ``[..., 4]``.

    The layout of ``tf.image.non_max_suppression`` and ``draw_bounding_boxes``:
    coordinates divided by the image ``height`` and ``width``. (For
    ``tf.image.crop_and_resize`` this is not RoIAlign's sampling; see ``RoIAlign``.)

    Introduced in notebook 06.
    """
    x1, y1, x2, y2 = _corners(_boxes(boxes))
    width = ops.cast(width, "float32")
    height = ops.cast(height, "float32")
    return ops.stack([y1 / height, x1 / width, y2 / height, x2 / width], axis=-1)


@_numpy_in_numpy_out
def yxyx_to_xyxy(boxes, height, width):
    """TF's normalized ``(y1, x1, y2, x2)`` to pixel ``(x1, y1, x2, y2)``, ``[..., 4]``.

    Introduced in notebook 06.
    """
    y1, x1, y2, x2 = _corners(_boxes(boxes))
    width = ops.cast(width, "float32")
    height = ops.cast(height, "float32")
    return ops.stack([x1 * width, y1 * height, x2 * width, y2 * height], axis=-1)

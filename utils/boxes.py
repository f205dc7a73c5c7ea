"""Box arithmetic for detectors: IoU, box coding, clipping, NMS and format conversions.

Boxes are float32 ``[..., 4]`` rows ``(x1, y1, x2, y2)`` in continuous pixel coordinates
(width ``x2 - x1``, no "+1"), as in torchvision.ops. A box with ``x2 < x1`` or
``y2 < y1`` is degenerate: it has zero area and overlaps nothing.

The functions other than ``nms`` have one implementation, written against a small
array namespace ``xp`` that is either ``keras.ops`` or NumPy: any tensor input (eager,
inside ``tf.function`` or a Keras model) runs on ``keras.ops`` and gives a tensor;
NumPy (or list) inputs run on NumPy and give NumPy. Running small NumPy arrays through
eager TensorFlow instead costs about 0.1 ms per op, which dominated detection
post-processing (notebook 08's timing) before this split.

Introduced in notebook 06 (IoU, coding, conversions) and 07 (NMS, batched NMS).
"""

import functools
import inspect
import math
import types

import keras
import numpy as np
from keras import ops

#: decode clamps log-size deltas here so ``exp`` never overflows (torchvision's value).
MAX_LOG_SCALE = math.log(1000.0 / 16)


def _cast_numpy(x, dtype):
    return np.asarray(x).astype(dtype, copy=False)


def _unstack_numpy(x, num, axis=0):
    x = np.moveaxis(np.asarray(x), axis, 0)
    if len(x) != num:
        raise ValueError(f"cannot unstack {len(x)} entries into {num}")
    return list(x)


#: The NumPy side of the namespace: the few ``keras.ops`` functions this module uses.
_NUMPY = types.SimpleNamespace(
    convert_to_tensor=np.asarray,
    cast=_cast_numpy,
    unstack=_unstack_numpy,
    stack=np.stack,
    maximum=np.maximum,
    minimum=np.minimum,
    clip=np.clip,
    where=np.where,
    log=np.log,
    exp=np.exp,
)


def _array_namespace(function):
    """Call ``function(xp, ...)`` with ``xp = keras.ops`` for tensor inputs, else NumPy."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        arguments = [*args, *kwargs.values()]
        if any(ops.is_tensor(a) or isinstance(a, keras.KerasTensor) for a in arguments):
            return function(ops, *args, **kwargs)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            result = function(_NUMPY, *args, **kwargs)
        return result.astype(np.float32, copy=False) if result.dtype.kind == "f" else result

    parameters = list(inspect.signature(function).parameters.values())[1:]
    wrapper.__signature__ = inspect.Signature(parameters)
    return wrapper


def _boxes(xp, boxes, name="boxes"):
    """``boxes`` as a float32 array or tensor, checking the last axis is 4."""
    boxes = xp.cast(xp.convert_to_tensor(boxes), "float32")
    if len(boxes.shape) == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} has shape {tuple(boxes.shape)}: expected [..., 4]")
    return boxes


def _corners(xp, boxes):
    return xp.unstack(boxes, 4, axis=-1)


@_array_namespace
def area(xp, boxes):
    """Area of each box, 0 for degenerate boxes: ``[..., 4] -> [...]``.

    Introduced in notebook 06.
    """
    x1, y1, x2, y2 = _corners(xp, _boxes(xp, boxes))
    return xp.maximum(x2 - x1, 0.0) * xp.maximum(y2 - y1, 0.0)


@_array_namespace
def iou(xp, boxes_a, boxes_b):
    """Pairwise intersection over union: ``[N, 4], [M, 4] -> [N, M]``.

    torchvision.ops.box_iou semantics (no "+1"); 0 where the union is 0, so degenerate
    and empty boxes overlap nothing and the result is never NaN.

    Introduced in notebook 06.
    """
    boxes_a, boxes_b = _boxes(xp, boxes_a, "boxes_a"), _boxes(xp, boxes_b, "boxes_b")
    for name, boxes in (("boxes_a", boxes_a), ("boxes_b", boxes_b)):
        if len(boxes.shape) != 2:
            raise ValueError(f"{name} has shape {tuple(boxes.shape)}: expected [N, 4]")
    ax1, ay1, ax2, ay2 = (c[:, None] for c in _corners(xp, boxes_a))
    bx1, by1, bx2, by2 = (c[None, :] for c in _corners(xp, boxes_b))
    width = xp.maximum(xp.minimum(ax2, bx2) - xp.maximum(ax1, bx1), 0.0)
    height = xp.maximum(xp.minimum(ay2, by2) - xp.maximum(ay1, by1), 0.0)
    intersection = width * height
    union = area(boxes_a)[:, None] + area(boxes_b)[None, :] - intersection
    return xp.where(union > 0, intersection / xp.maximum(union, 1e-12), 0.0)


def _centres_and_sizes(xp, boxes):
    x1, y1, x2, y2 = _corners(xp, boxes)
    return (x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1


@_array_namespace
def encode(xp, boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Regression targets that move ``anchors`` onto ``boxes``: ``[..., 4] -> [..., 4]``.

    Faster R-CNN's parametrisation (torchvision BoxCoder): ``dx = wx * (gx - ax) / aw``,
    ``dy = wy * (gy - ay) / ah``, ``dw = ww * log(gw / aw)``, ``dh = wh * log(gh / ah)``
    on centres and sizes. RPN weights are (1, 1, 1, 1), the RoI head's (10, 10, 5, 5).
    Box and anchor sizes are floored at 1e-6 pixels, so a degenerate box or anchor gives
    large but finite deltas rather than ``inf`` or NaN (detectors drop such anchors and
    proposals before they get here: ``remove_small_boxes``).

    Introduced in notebook 06.
    """
    wx, wy, ww, wh = weights
    gx, gy, gw, gh = _centres_and_sizes(xp, _boxes(xp, boxes))
    ax, ay, aw, ah = _centres_and_sizes(xp, _boxes(xp, anchors, "anchors"))
    gw, gh = xp.maximum(gw, 1e-6), xp.maximum(gh, 1e-6)
    aw, ah = xp.maximum(aw, 1e-6), xp.maximum(ah, 1e-6)
    return xp.stack(
        [
            wx * (gx - ax) / aw,
            wy * (gy - ay) / ah,
            ww * xp.log(gw / aw),
            wh * xp.log(gh / ah),
        ],
        axis=-1,
    )


@_array_namespace
def decode(xp, deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Boxes from regression ``deltas`` applied to ``anchors``; inverse of ``encode``.

    torchvision BoxCoder.decode: ``dw / ww`` and ``dh / wh`` are clamped at
    ``log(1000 / 16)`` before ``exp`` so a wild prediction cannot overflow.
    Shapes ``[..., 4], [..., 4] -> [..., 4]``.

    Introduced in notebook 06.
    """
    wx, wy, ww, wh = weights
    dx, dy, dw, dh = xp.unstack(_boxes(xp, deltas, "deltas"), 4, axis=-1)
    ax, ay, aw, ah = _centres_and_sizes(xp, _boxes(xp, anchors, "anchors"))
    cx = dx / wx * aw + ax
    cy = dy / wy * ah + ay
    half_w = xp.exp(xp.minimum(dw / ww, MAX_LOG_SCALE)) * aw * 0.5
    half_h = xp.exp(xp.minimum(dh / wh, MAX_LOG_SCALE)) * ah * 0.5
    return xp.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


@_array_namespace
def clip(xp, boxes, height, width):
    """Clip boxes to the image ``[0, width] x [0, height]``: ``[..., 4] -> [..., 4]``.

    torchvision.ops.clip_boxes_to_image semantics.

    Introduced in notebook 06.
    """
    x1, y1, x2, y2 = _corners(xp, _boxes(xp, boxes))
    width = xp.cast(width, "float32")
    height = xp.cast(height, "float32")
    return xp.stack(
        [
            xp.clip(x1, 0.0, width),
            xp.clip(y1, 0.0, height),
            xp.clip(x2, 0.0, width),
            xp.clip(y2, 0.0, height),
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
        raise ValueError(f"boxes has shape {boxes.shape}: expected [N, 4]")
    if scores.shape != (len(boxes),):
        raise ValueError(
            f"scores has shape {scores.shape}: expected [{len(boxes)}], one score per box"
        )
    if max_output_size is not None and max_output_size < 0:
        raise ValueError(f"max_output_size={max_output_size!r}: expected an integer >= 0 or None")
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


def batched_nms(boxes, scores, labels, iou_threshold, max_output_size=None):
    """NMS within each label at once; kept indices in descending score order.

    torchvision.ops.batched_nms's coordinate trick: each label's boxes are shifted by
    ``label * (largest coordinate + 1)``, so boxes of different labels never overlap and
    one ``nms`` call does per-class NMS. ``boxes [N, 4]``, ``scores [N]``, int ``labels
    [N]`` (NumPy) -> int64 ``[K]``. Introduced in notebook 07.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    if labels.shape != (len(boxes),):
        raise ValueError(f"labels has shape {labels.shape}: expected [{len(boxes)}], one per box")
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    offsets = labels[:, None].astype(np.float32) * (float(np.abs(boxes).max()) + 1.0)
    return nms(boxes + offsets, scores, iou_threshold, max_output_size)


@_array_namespace
def remove_small_boxes(xp, boxes, min_size):
    """A mask of the boxes at least ``min_size`` pixels wide and high: ``[..., 4] -> [...]``.

    torchvision.ops.remove_small_boxes's test (it returns indices; a mask works inside
    graphs too). Introduced in notebook 07.
    """
    x1, y1, x2, y2 = _corners(xp, _boxes(xp, boxes))
    return ((x2 - x1) >= min_size) & ((y2 - y1) >= min_size)


@_array_namespace
def flip_boxes(xp, boxes, size, *, horizontal=True):
    """Boxes of an image mirrored left-right (``horizontal``) or top-bottom: ``[..., 4]``.

    ``size`` is the image width (or height): ``x -> size - x``, the two corners swapped so
    ``x1 <= x2`` still holds. Introduced in notebook 08.
    """
    x1, y1, x2, y2 = _corners(xp, _boxes(xp, boxes))
    size = xp.cast(size, "float32")
    if horizontal:
        return xp.stack([size - x2, y1, size - x1, y2], axis=-1)
    return xp.stack([x1, size - y2, x2, size - y1], axis=-1)


@_array_namespace
def paired_iou(xp, boxes_a, boxes_b):
    """IoU of each box with its partner: ``[..., 4], [..., 4] -> [...]`` (same shapes).

    The diagonal of ``iou`` without the ``N x N`` matrix. Introduced in notebook 06.
    """
    boxes_a, boxes_b = _boxes(xp, boxes_a, "boxes_a"), _boxes(xp, boxes_b, "boxes_b")
    if tuple(boxes_a.shape) != tuple(boxes_b.shape):
        raise ValueError(
            f"boxes_a has shape {tuple(boxes_a.shape)} and boxes_b {tuple(boxes_b.shape)}: "
            "expected the same shape"
        )
    ax1, ay1, ax2, ay2 = _corners(xp, boxes_a)
    bx1, by1, bx2, by2 = _corners(xp, boxes_b)
    width = xp.maximum(xp.minimum(ax2, bx2) - xp.maximum(ax1, bx1), 0.0)
    height = xp.maximum(xp.minimum(ay2, by2) - xp.maximum(ay1, by1), 0.0)
    intersection = width * height
    union = area(boxes_a) + area(boxes_b) - intersection
    return xp.where(union > 0, intersection / xp.maximum(union, 1e-12), 0.0)


def batched_iou(boxes, anchors):
    """IoU of each image's boxes ``[B, M, 4]`` with shared ``anchors [N, 4]``: ``[B, M, N]``.

    ``iou`` on the flattened batch (tensors). Introduced in notebook 09.
    """
    batch, count = ops.shape(boxes)[0], ops.shape(boxes)[1]
    overlaps = iou(ops.reshape(boxes, (-1, 4)), anchors)
    return ops.reshape(overlaps, (batch, count, -1))


@_array_namespace
def xyxy_to_cxcywh(xp, boxes):
    """``(x1, y1, x2, y2)`` to ``(centre x, centre y, width, height)``, ``[..., 4]``.

    Introduced in notebook 06.
    """
    return xp.stack(_centres_and_sizes(xp, _boxes(xp, boxes)), axis=-1)


@_array_namespace
def cxcywh_to_xyxy(xp, boxes):
    """``(centre x, centre y, width, height)`` to ``(x1, y1, x2, y2)``, ``[..., 4]``.

    Introduced in notebook 06.
    """
    cx, cy, w, h = _corners(xp, _boxes(xp, boxes))
    return xp.stack([cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5], axis=-1)


@_array_namespace
def xywh_to_xyxy(xp, boxes):
    """COCO's ``(x, y, width, height)`` to ``(x1, y1, x2, y2)``, ``[..., 4]``.

    Introduced in notebook 06.
    """
    x, y, w, h = _corners(xp, _boxes(xp, boxes))
    return xp.stack([x, y, x + w, y + h], axis=-1)


@_array_namespace
def xyxy_to_xywh(xp, boxes):
    """``(x1, y1, x2, y2)`` to COCO's ``(x, y, width, height)``, ``[..., 4]``.

    Introduced in notebook 06.
    """
    x1, y1, x2, y2 = _corners(xp, _boxes(xp, boxes))
    return xp.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)


@_array_namespace
def xyxy_to_yxyx(xp, boxes, height, width):
    """Pixel ``(x1, y1, x2, y2)`` to TF's normalized ``(y1, x1, y2, x2)``, ``[..., 4]``.

    The layout of ``tf.image.non_max_suppression`` and ``draw_bounding_boxes``:
    coordinates divided by the image ``height`` and ``width``. (For
    ``tf.image.crop_and_resize`` this is not RoIAlign's sampling; see ``RoIAlign``.)

    Introduced in notebook 06.
    """
    x1, y1, x2, y2 = _corners(xp, _boxes(xp, boxes))
    width = xp.cast(width, "float32")
    height = xp.cast(height, "float32")
    return xp.stack([y1 / height, x1 / width, y2 / height, x2 / width], axis=-1)


@_array_namespace
def yxyx_to_xyxy(xp, boxes, height, width):
    """TF's normalized ``(y1, x1, y2, x2)`` to pixel ``(x1, y1, x2, y2)``, ``[..., 4]``.

    Introduced in notebook 06.
    """
    y1, x1, y2, x2 = _corners(xp, _boxes(xp, boxes))
    width = xp.cast(width, "float32")
    height = xp.cast(height, "float32")
    return xp.stack([x1 * width, y1 * height, x2 * width, y2 * height], axis=-1)

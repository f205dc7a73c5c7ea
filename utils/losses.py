"""Loss terms the detectors share: smooth L1 and the true class's box deltas.

torchvision keeps ``smooth_l1_loss`` in ``models/detection/_utils.py`` and picks the true
class's deltas inside ``fastrcnn_loss``; here both live once, for R-CNN's patch classifier
(notebook 07), the RoI head of Fast and Faster R-CNN (``utils.roi_heads``) and the RPN
(``utils.rpn``). ``keras.ops`` throughout, so they work eagerly and inside a graph.
Introduced in notebook 07.
"""

from __future__ import annotations

from keras import ops


def smooth_l1(difference, beta: float = 1.0):
    """Smooth L1 elementwise: ``0.5 x^2 / beta`` where ``|x| < beta``, else ``|x| - beta / 2``.

    torchvision's ``smooth_l1_loss`` with ``beta`` (Fast R-CNN's 1; the RPN uses 1/9),
    before any reduction. Introduced in notebook 07.
    """
    absolute = ops.abs(difference)
    return ops.where(absolute < beta, 0.5 * absolute**2 / beta, absolute - 0.5 * beta)


def true_class_deltas(deltas, labels):
    """Each row's four deltas of its own class: ``[N, 4K], [N] -> [N, 4]``.

    ``deltas`` hold class ``c``'s ``(dx, dy, dw, dh)`` in columns ``4c .. 4c + 3``;
    ``labels`` are 0 for background and ``c + 1`` for class ``c`` (background and
    ignored rows get class 0's deltas, which a loss then masks out). Class-specific box
    regression trains only the true class's regressor (Fast R-CNN, sec. 2.3).
    Introduced in notebook 07.
    """
    num_classes = deltas.shape[-1] // 4
    per_class = ops.reshape(deltas, (-1, num_classes, 4))
    chosen = ops.one_hot(
        ops.maximum(ops.cast(labels, "int32") - 1, 0), num_classes, dtype=per_class.dtype
    )
    return ops.sum(per_class * chosen[:, :, None], axis=1)

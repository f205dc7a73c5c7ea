"""Loss terms the detectors share: smooth L1, the true class's box deltas, focal loss.

torchvision keeps ``smooth_l1_loss`` in ``models/detection/_utils.py`` and picks the true
class's deltas inside ``fastrcnn_loss``; here both live once, for R-CNN's patch classifier
(notebook 07), the RoI head of Fast and Faster R-CNN (``utils.roi_heads``), the RPN
(``utils.rpn``) and the one-stage detector (``utils.one_stage``, notebook 11), with
RetinaNet's focal loss. ``keras.ops`` throughout, so they work eagerly and inside a
graph. Introduced in notebook 07.
"""

from __future__ import annotations

from keras import ops

from utils.checks import check_fraction, check_number


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


def sigmoid_focal_loss(logits, targets, alpha: float | None = 0.25, gamma: float = 2.0):
    """The focal loss of RetinaNet (Lin et al., 2017), elementwise, before any reduction.

    torchvision's ``ops.sigmoid_focal_loss`` formula: ``p = sigmoid(logits)``, ``ce =``
    binary cross-entropy of ``targets`` (0 or 1) with ``logits``, ``p_t = p t + (1 - p)(1 -
    t)``, loss ``= ce (1 - p_t)^gamma``, times ``alpha_t = alpha t + (1 - alpha)(1 - t)``
    unless ``alpha`` is None (torchvision's ``alpha < 0``). ``gamma = 0`` and ``alpha =
    None`` is plain binary cross-entropy. Introduced in notebook 11.
    """
    if alpha is not None:
        check_fraction("alpha", alpha)
    check_number("gamma", gamma, 0.0)
    logits = ops.cast(logits, "float32")
    targets = ops.cast(targets, "float32")
    probability = ops.sigmoid(logits)
    cross_entropy = ops.binary_crossentropy(targets, logits, from_logits=True)
    p_t = probability * targets + (1.0 - probability) * (1.0 - targets)
    loss = cross_entropy if gamma == 0 else cross_entropy * (1.0 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * loss
    return loss

"""Loss terms the detectors share: smooth L1, the true class's box deltas, focal loss.

torchvision keeps ``smooth_l1_loss`` in ``models/detection/_utils.py`` and picks the true
class's deltas inside ``fastrcnn_loss``; here both live once, for R-CNN's patch classifier
(notebook 07), the RoI head of Fast and Faster R-CNN (``utils.roi_heads``), the RPN
(``utils.rpn``) and the one-stage detector (``utils.one_stage``, notebook 11), with
RetinaNet's focal loss, the one-stage detector's loss over every anchor
(``one_stage_loss``) and where its sum comes from (``loss_shares``). ``keras.ops`` throughout, so they work eagerly and inside a
graph. Introduced in notebook 07.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from utils.checks import check_fraction, check_number
from utils.matching import BACKGROUND, IGNORED

SMOOTH_L1_BETA = 1.0 / 9.0
"""The one-stage box loss's smooth L1 turns linear here (the RPN's and Detectron's RetinaNet's)."""
EASY_PROBABILITY = 0.1
"""A background (anchor, class) pair is an *easy negative* when its score is below this."""


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


def _class_targets(anchor_labels, num_classes):
    """Per (anchor, class) 0/1 targets ``[..., K]`` and the non-ignored mask ``[...]``."""
    anchor_labels = ops.cast(anchor_labels, "int32")
    positive = ops.cast(anchor_labels > BACKGROUND, "float32")
    one_hot = ops.one_hot(ops.maximum(anchor_labels - 1, 0), num_classes) * positive[..., None]
    return one_hot, ops.cast(anchor_labels != IGNORED, "float32"), positive


def one_stage_loss(
    class_logits,
    box_deltas,
    anchor_labels,
    box_targets,
    *,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    beta: float = SMOOTH_L1_BETA,
):
    """RetinaNet's loss of a batch: ``{"class_loss", "box_loss"}``, float32 scalars.

    ``class_logits [..., N, K]``, ``box_deltas [..., N, 4]``, ``anchor_labels [..., N]``
    and ``box_targets [..., N, 4]`` from ``anchor_targets``. ``class_loss``: the sigmoid
    focal loss (``alpha``, ``gamma``; gamma 0 is binary cross-entropy) summed over every
    non-ignored anchor and all ``K`` classes; ``box_loss``: smooth L1 (``beta``) summed
    over the positives' four deltas; both divided by the number of positive anchors (at
    least 1). ``keras.ops`` throughout, so it runs inside ``train_step``.
    """
    logits = ops.cast(class_logits, "float32")
    targets, valid, positive = _class_targets(anchor_labels, logits.shape[-1])
    count = ops.maximum(ops.sum(positive), 1.0)
    focal = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma)
    class_loss = ops.sum(focal * valid[..., None]) / count
    box = ops.sum(smooth_l1(ops.cast(box_deltas, "float32") - box_targets, beta), axis=-1)
    return {"class_loss": class_loss, "box_loss": ops.sum(box * positive) / count}


def loss_shares(
    class_logits,
    anchor_labels,
    *,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    easy_probability: float = EASY_PROBABILITY,
) -> dict[str, float]:
    """Where a class loss comes from: its shares from positives, hard and easy negatives.

    The elements of the sum are (anchor, class) pairs of non-ignored anchors
    (``class_logits [..., N, K]``, ``anchor_labels [..., N]``): *positive* where the
    target is 1 (the anchor's own class), *easy negative* where it is 0 and the score is
    below ``easy_probability``, *hard negative* otherwise. Returns the three shares of
    the summed ``sigmoid_focal_loss(alpha, gamma)`` (they add up to 1) and the counts
    ``"easy_negatives"``, ``"pairs"`` (all the elements). NumPy out. Introduced in
    notebook 11 (Lin et al.'s argument: cross-entropy's sum is dominated by the many
    easy negatives, focal loss's is not).
    """
    check_fraction("easy_probability", easy_probability)
    logits = np.asarray(class_logits, np.float32)
    labels = np.asarray(anchor_labels)
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"class_logits has shape {logits.shape} and anchor_labels {labels.shape}: "
            "expected one label per anchor"
        )
    targets, valid, _ = (np.asarray(t) for t in _class_targets(labels, logits.shape[-1]))
    losses = np.asarray(sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma))
    losses = losses * valid[..., None]
    probability = 1.0 / (1.0 + np.exp(-logits))
    negative = (targets == 0) & (valid[..., None] > 0)
    easy = negative & (probability < easy_probability)
    total = max(float(losses.sum()), 1e-30)
    return {
        "positives": float(losses[targets == 1].sum() / total),
        "hard_negatives": float(losses[negative & ~easy].sum() / total),
        "easy_negatives": float(losses[easy].sum() / total),
        "easy_negative_count": int(easy.sum()),
        "pairs": int((np.broadcast_to(valid[..., None], targets.shape) > 0).sum()),
    }

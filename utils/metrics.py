"""Detection metrics: PASCAL VOC average precision and mean average precision.

Introduced in notebook 07.
"""

import numpy as np

from utils import boxes as box_ops

METHODS = ("all-point", "11-point")


def precision_envelope(precision):
    """Monotone envelope of a precision curve: max precision at this or any higher recall.

    The curve whose area is all-point AP; plot it as a step over recall next to the raw
    precision. NumPy ``[K] -> [K]``.

    Introduced in notebook 07.
    """
    precision = np.asarray(precision, dtype=np.float64)
    return np.maximum.accumulate(precision[::-1])[::-1]


def average_precision(recall, precision, method="all-point"):
    """Area under one class's precision-recall curve, PASCAL VOC devkit style.

    ``recall`` and ``precision`` are the cumulative values after each detection in
    descending score order. ``"all-point"`` (VOC2010 onward) integrates the monotone
    precision envelope over every recall step; ``"11-point"`` (VOC2007) averages the
    max precision at recall >= 0, 0.1, ..., 1.

    Introduced in notebook 07.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {METHODS}")
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.shape != precision.shape or recall.ndim != 1:
        raise ValueError(
            f"recall has shape {recall.shape} and precision {precision.shape}: expected two "
            "1-D arrays of the same length"
        )
    if method == "11-point":
        return float(
            np.mean(
                [
                    precision[recall >= threshold].max(initial=0.0)
                    for threshold in np.linspace(0, 1, 11)
                ]
            )
        )
    recall = np.concatenate([[0.0], recall, [1.0]])
    envelope = precision_envelope(np.concatenate([[0.0], precision, [0.0]]))
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def _checked_image(entry, index, argument, fields):
    """One image's arrays from ``entry``, checking their shapes agree."""
    # A tuple, a list, or anything that unpacks into its fields (utils.roi_heads.Detections).
    parts = tuple(entry) if not isinstance(entry, np.ndarray | str) else ()
    if len(parts) != len(fields):
        raise ValueError(f"{argument}[{index}]={entry!r}: expected a tuple ({', '.join(fields)})")
    entry = parts
    boxes = np.asarray(entry[0], dtype=np.float32)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{argument}[{index}] boxes have shape {boxes.shape}: expected [N, 4]")
    arrays = [boxes] + [np.asarray(values).reshape(-1) for values in entry[1:]]
    lengths = [len(array) for array in arrays]
    if len(set(lengths)) != 1:
        raise ValueError(
            f"{argument}[{index}] has lengths {dict(zip(fields, lengths, strict=True))}: "
            f"expected one {'/'.join(fields[1:])} entry per box"
        )
    return arrays


def _match_class(ground_truths, detections, overlaps, label, iou_threshold):
    """True-positive flags and sorted scores of one class's detections (devkit rule)."""
    scores, claims, ground_truth_count = [], [], 0
    for (_, gt_labels), (_, labels, image_scores), image_overlaps in zip(
        ground_truths, detections, overlaps, strict=True
    ):
        mine, theirs = labels == label, gt_labels == label
        class_overlaps = image_overlaps[mine][:, theirs]
        best = class_overlaps.argmax(axis=1) if theirs.any() else np.zeros(mine.sum(), int)
        best_iou = class_overlaps.max(axis=1, initial=0.0)
        # Which (image, ground-truth box) each detection claims; -1: claims none.
        claims.append(np.where(best_iou >= iou_threshold, ground_truth_count + best, -1))
        scores.append(image_scores[mine])
        ground_truth_count += int(theirs.sum())
    scores = np.concatenate(scores).astype(np.float64)
    claims = np.concatenate(claims)
    order = np.argsort(-scores, kind="stable")
    scores, claims = scores[order], claims[order]
    # The highest-scoring claim on a box is its match; later claims are duplicates.
    true_positive = np.zeros(len(claims), dtype=bool)
    claimed, first = np.unique(claims, return_index=True)
    true_positive[first[claimed >= 0]] = True
    return true_positive, scores, ground_truth_count


def checked_images(ground_truths, detections) -> tuple[list, list]:
    """Both lists with every image's entry checked and as arrays (``_checked_image``):
    ``(boxes, labels)`` per image of ground truth, ``(boxes, labels, scores)`` of
    detections."""
    ground_truths = [
        _checked_image(entry, index, "ground_truths", ("boxes", "labels"))
        for index, entry in enumerate(ground_truths)
    ]
    detections = [
        _checked_image(entry, index, "detections", ("boxes", "labels", "scores"))
        for index, entry in enumerate(detections)
    ]
    return ground_truths, detections


def mean_average_precision(ground_truths, detections, iou_threshold=0.5, method="all-point"):
    """PASCAL VOC mean average precision over a data set, with per-class curves.

    The VOC devkit's rule: per class, detections from all images sorted by score
    (highest first, ties in input order); each takes the ground-truth box of its class
    in its image with the highest IoU and is a true positive if that IoU >=
    ``iou_threshold`` and the box is not yet matched (it then is), else a false positive.
    ``>=`` as the devkit's MATLAB ``VOCevaldet.m`` (``ovmax >= minoverlap``), the spec and
    COCO; py-faster-rcnn's ``voc_eval.py`` uses ``>``.
    AP is dataset-level per class (``average_precision``); mAP is the mean over the
    classes that have ground truth (a class with ground truth but no detections scores
    0; classes only detected are left out). No "difficult" flags.

    ``ground_truths``: one ``(boxes [G, 4], labels [G])`` per image; ``detections``: one
    ``(boxes [D, 4], labels [D], scores [D])`` per image; boxes ``(x1, y1, x2, y2)``.
    Returns a dict: ``"mAP"`` (float, NaN when no class has ground truth), and per class
    ``"AP"``, ``"precision"``, ``"recall"`` and ``"scores"`` (cumulative curves in
    descending score order, ready to plot) and ``"num_ground_truth"``.

    Introduced in notebook 07.
    """
    if len(ground_truths) != len(detections):
        raise ValueError(
            f"ground_truths has {len(ground_truths)} entries and detections {len(detections)}: "
            "expected one per image"
        )
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {METHODS}")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold={iou_threshold!r}: expected a number in (0, 1]")
    ground_truths, detections = checked_images(ground_truths, detections)
    overlaps = [
        box_ops.iou(boxes, gt_boxes)
        for (gt_boxes, _), (boxes, _, _) in zip(ground_truths, detections, strict=True)
    ]
    # Empty label lists are float arrays; leaving them out keeps integer class ids.
    labels = [labels for _, labels in ground_truths if len(labels)]
    classes = np.unique(np.concatenate(labels)).tolist() if labels else []
    result = {"AP": {}, "precision": {}, "recall": {}, "scores": {}, "num_ground_truth": {}}
    for label in classes:
        true_positive, scores, count = _match_class(
            ground_truths, detections, overlaps, label, iou_threshold
        )
        hits = np.cumsum(true_positive)
        recall = hits / count
        precision = hits / np.arange(1, len(hits) + 1)
        result["AP"][label] = average_precision(recall, precision, method)
        result["precision"][label] = precision
        result["recall"][label] = recall
        result["scores"][label] = scores
        result["num_ground_truth"][label] = count
    ap_values = list(result["AP"].values())
    result["mAP"] = float(np.mean(ap_values)) if ap_values else float("nan")
    return result

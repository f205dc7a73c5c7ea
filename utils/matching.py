"""Training targets for detectors: match boxes to ground truth by IoU, and balanced sampling.

Follows torchvision's ``Matcher`` and ``BalancedPositiveNegativeSampler``
(``torchvision/models/detection/_utils.py``) and the thresholds of the Fast/Faster
R-CNN papers (``detection-spec.md``). NumPy, because targets are made outside the
graph, per image (introduced in notebook 07; the RPN reuses it in notebook 09).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.boxes import encode, iou
from utils.checks import check_count, check_fraction, check_threshold_order

# What ``match_boxes`` gives a box that matches no ground truth (torchvision Matcher's names).
BELOW_LOW_THRESHOLD = -1
"""``match_boxes`` result for a box whose best IoU is below the low threshold."""
BETWEEN_THRESHOLDS = -2
"""``match_boxes`` result for a box between the thresholds."""

# Training labels: one table for the labels of proposals, anchors and sampled RoIs.
IGNORED = -1
"""Not trained on: a box between the thresholds, or a padding row."""
BACKGROUND = 0
"""A background proposal or RoI, a negative anchor."""
FOREGROUND = 1
"""An anchor on an object (the RPN's positive label); an RoI of class ``c`` has label ``c + 1``."""


def match_boxes(
    overlaps: np.ndarray,
    high_threshold: float,
    low_threshold: float,
    *,
    allow_low_quality_matches: bool = False,
) -> np.ndarray:
    """Match each box (column) to its best ground truth (row) of an IoU matrix ``[G, N]``.

    Returns int64 ``[N]``: the index of the matched ground-truth box where the best IoU
    is >= ``high_threshold``, ``BELOW_LOW_THRESHOLD`` (-1) where it is < ``low_threshold``,
    ``BETWEEN_THRESHOLDS`` (-2) in between. With ``allow_low_quality_matches`` (the RPN rule), each
    ground-truth box also claims the boxes that tie for its highest IoU, but only when
    that IoU is > 0: a ground-truth box that touches no box claims nothing.
    """
    overlaps = np.asarray(overlaps, dtype=np.float64)
    if overlaps.ndim != 2:
        raise ValueError(f"overlaps has shape {overlaps.shape}: expected an IoU matrix [G, N]")
    check_threshold_order("low_threshold", low_threshold, "high_threshold", high_threshold)
    count = overlaps.shape[1]
    if overlaps.shape[0] == 0:
        return np.full(count, BELOW_LOW_THRESHOLD, np.int64)
    matches = overlaps.argmax(axis=0).astype(np.int64)
    best = overlaps.max(axis=0)
    matches[best < high_threshold] = BETWEEN_THRESHOLDS
    matches[best < low_threshold] = BELOW_LOW_THRESHOLD
    if allow_low_quality_matches and count:
        best_per_truth = overlaps.max(axis=1, keepdims=True)
        _, box = np.nonzero((overlaps == best_per_truth) & (best_per_truth > 0))
        # A box that is the best for several ground truths keeps its own argmax.
        matches[box] = overlaps[:, box].argmax(axis=0)
    return matches


@dataclass(frozen=True)
class ProposalTargets:
    """What each proposal should predict: class (0 = background) and box deltas."""

    labels: np.ndarray  # int64 [P]: BACKGROUND (0), c + 1 for class c, IGNORED (-1)
    regression_targets: np.ndarray  # float32 [P, 4], zeros where not foreground
    matched_iou: np.ndarray  # float32 [P], best IoU with any ground truth
    matched_index: np.ndarray  # int64 [P], ground-truth index, or a match_boxes code (< 0)


def label_proposals(
    proposals: np.ndarray,
    ground_truth_boxes: np.ndarray,
    ground_truth_labels: np.ndarray,
    *,
    foreground_iou: float = 0.5,
    background_iou: float = 0.5,
    weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
    allow_low_quality_matches: bool = False,
) -> ProposalTargets:
    """Label proposals ``[P, 4]`` against ground truth ``[G, 4]`` with classes ``[G]`` (0-based).

    Fast R-CNN's rule: foreground when the best IoU >= ``foreground_iou`` (label = class + 1,
    regression target = ``encode(ground truth, proposal, weights)``), background when it
    is < ``background_iou``, ignored in between (only when ``background_iou`` is lower).
    ``allow_low_quality_matches`` also makes each ground-truth box's best proposal its
    foreground (``match_boxes``' rule for anchors: the one-stage detector's targets).
    """
    proposals = np.asarray(proposals, np.float32).reshape(-1, 4)
    ground_truth_boxes = np.asarray(ground_truth_boxes, np.float32).reshape(-1, 4)
    ground_truth_labels = np.asarray(ground_truth_labels, np.int64).reshape(-1)
    if len(ground_truth_boxes) != len(ground_truth_labels):
        raise ValueError(
            f"ground_truth_boxes has {len(ground_truth_boxes)} boxes and ground_truth_labels "
            f"{len(ground_truth_labels)} labels: expected one label per box"
        )
    if len(ground_truth_boxes):
        overlaps = np.asarray(iou(ground_truth_boxes, proposals), np.float32)
    else:
        overlaps = np.zeros((0, len(proposals)), np.float32)
    matches = match_boxes(
        overlaps,
        foreground_iou,
        background_iou,
        allow_low_quality_matches=allow_low_quality_matches,
    )
    foreground = matches >= 0
    labels = np.where(matches == BETWEEN_THRESHOLDS, IGNORED, BACKGROUND).astype(np.int64)
    labels[foreground] = ground_truth_labels[matches[foreground]] + 1
    targets = np.zeros((len(proposals), 4), np.float32)
    if foreground.any():
        targets[foreground] = np.asarray(
            encode(ground_truth_boxes[matches[foreground]], proposals[foreground], weights=weights)
        )
    matched_iou = overlaps.max(axis=0) if len(overlaps) else np.zeros(len(proposals), np.float32)
    return ProposalTargets(labels, targets, matched_iou.astype(np.float32), matches)


def sample_balanced(
    labels: np.ndarray,
    num_samples: int,
    foreground_fraction: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Pick up to ``num_samples`` indices: at most ``foreground_fraction`` with label > 0, the rest 0.

    torchvision's balanced sampler: foreground first (random subset if too many), then
    background fills the remainder; labels < 0 (ignored) are never picked. Returns
    int64 indices, foreground first.
    """
    labels = np.asarray(labels)
    check_count("num_samples", num_samples)
    check_fraction("foreground_fraction", foreground_fraction)
    foreground = np.flatnonzero(labels > BACKGROUND)
    background = np.flatnonzero(labels == BACKGROUND)
    num_foreground = min(len(foreground), int(num_samples * foreground_fraction))
    num_background = min(len(background), num_samples - num_foreground)
    chosen_foreground = rng.choice(foreground, num_foreground, replace=False)
    chosen_background = rng.choice(background, num_background, replace=False)
    return np.concatenate([chosen_foreground, chosen_background]).astype(np.int64)

"""How sure a measured number is: intervals for accuracies, spreads over seeds, paired bootstraps.

The course's conventions (``detection-spec.md``, "Uncertainty"):

- an accuracy on n images gets a Wilson 95% interval (``wilson_interval``,
  ``accuracy_interval``), the same numbers as SciPy's
  ``binomtest(k, n).proportion_ci(method="wilson")``;
- several trainings get the mean and the standard deviation (ddof=1) over seeds, each
  seed named (``mean_std``, ``format_mean_std``, ``seed_difference``);
- a difference of two methods on the *same* images gets a paired bootstrap over images:
  resample image indices with replacement, recompute both methods' metric on the same
  resample, take the 2.5 and 97.5 percentiles of the difference; 1,000 resamples and a
  fixed seed (``paired_bootstrap`` for any per-image metric such as accuracy,
  ``map_bootstrap`` for detection mAP). An interval that covers zero means the two are
  tied on this data.

Introduced in notebook 01 (accuracy); the mAP bootstrap is used by notebooks 07-11.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from utils import boxes as box_ops
from utils.checks import (
    check_choice,
    check_count,
    check_number,
    check_same_length,
    fail,
)
from utils.metrics import METHODS, _match_class, checked_images

RESAMPLES = 1000
SEED = 0
# Resamples x detections per block of the vectorised mAP bootstrap (memory ~ 8 bytes each).
_BLOCK_ELEMENTS = 2_000_000


def _check_confidence(confidence) -> float:
    return check_number("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)


def wilson_interval(successes, trials, confidence=0.95) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` for a proportion ``successes / trials``.

    Newcombe (1998) without continuity correction, two-sided; ``low`` is exactly 0 when
    ``successes == 0`` and ``high`` exactly 1 when ``successes == trials``, as in SciPy's
    ``binomtest(successes, trials).proportion_ci(confidence, method="wilson")``.

    Introduced in notebook 01.
    """
    trials = check_count("trials", trials)
    successes = check_count("successes", successes, minimum=0)
    if successes > trials:
        fail("successes", successes, f"an integer <= trials={trials}")
    confidence = _check_confidence(confidence)
    z = NormalDist().inv_cdf(0.5 + 0.5 * confidence)
    p = successes / trials
    denominator = 2 * (trials + z**2)
    center = (2 * trials * p + z**2) / denominator
    delta = z / denominator * math.sqrt(4 * trials * p * (1 - p) + z**2)
    low = 0.0 if successes == 0 else center - delta
    high = 1.0 if successes == trials else center + delta
    return low, high


def _class_ids(values, name: str) -> np.ndarray:
    """Class ids ``[N]`` from ids ``[N]`` or per-class scores / one-hot rows ``[N, C]``."""
    values = np.asarray(values)
    if values.ndim == 2:
        return values.argmax(axis=1)
    if values.ndim != 1:
        raise ValueError(
            f"{name} has shape {values.shape}: expected class ids [N] or per-class scores [N, C]"
        )
    return values


def correct_per_image(predictions, labels) -> np.ndarray:
    """Boolean ``[N]``: whether each image's predicted class equals its label.

    ``predictions``: class ids ``[N]`` or per-class scores ``[N, C]`` (argmax taken);
    ``labels``: class ids ``[N]`` or one-hot ``[N, C]``. The per-image values a paired
    bootstrap of accuracy resamples.

    Introduced in notebook 01.
    """
    predicted = _class_ids(predictions, "predictions")
    truth = _class_ids(labels, "labels")
    check_same_length("predictions", predicted, "labels", truth)
    if len(truth) == 0:
        fail("labels", labels, "at least one image")
    return predicted == truth


def accuracy_interval(predictions, labels, confidence=0.95) -> tuple[float, float, float]:
    """``(accuracy, low, high)``: an accuracy on N images with its Wilson interval.

    Shapes as ``correct_per_image``. Introduced in notebook 01.
    """
    correct = correct_per_image(predictions, labels)
    low, high = wilson_interval(int(correct.sum()), len(correct), confidence)
    return float(correct.mean()), low, high


def format_interval(value, low, high, digits=3) -> str:
    """``"0.912 [0.890, 0.931]"``: a value and its interval for a table. Introduced in notebook 01."""
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _seed_values(values_by_seed, name: str) -> np.ndarray:
    if not isinstance(values_by_seed, Mapping):
        fail(name, values_by_seed, "a mapping {seed: value}, so that each seed is named")
    if len(values_by_seed) < 2:
        fail(name, values_by_seed, "at least 2 seeds for a spread")
    values = np.asarray(list(values_by_seed.values()), dtype=np.float64)
    if values.ndim != 1 or not np.isfinite(values).all():
        fail(name, values_by_seed, "one finite number per seed")
    return values


def mean_std(values_by_seed) -> tuple[float, float]:
    """``(mean, std)`` of one number measured once per seed; ``std`` with ddof=1.

    ``values_by_seed``: a mapping ``{seed: value}`` with at least two seeds (one value has
    no spread: that is a ValueError, not a zero). Introduced in notebook 01.
    """
    values = _seed_values(values_by_seed, "values_by_seed")
    return float(values.mean()), float(values.std(ddof=1))


def format_mean_std(values_by_seed, digits=3) -> str:
    """``"0.912 ± 0.008 (3 seeds)"``: ``mean_std`` for a table. Introduced in notebook 01."""
    mean, std = mean_std(values_by_seed)
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({len(values_by_seed)} seeds)"


@dataclass(frozen=True)
class Difference:
    """A measured difference ``A - B`` and its interval at ``confidence``.

    ``covers_zero``: the interval contains 0, so on this data the two are tied.
    ``str()`` gives a line for a notebook, e.g. ``"difference +0.012, 95% interval
    [-0.010, 0.034]: inside the noise, tied"``. Introduced in notebook 01.
    """

    observed: float
    low: float
    high: float
    confidence: float
    method: str

    @property
    def covers_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    def verdict(self, name_a="A", name_b="B") -> str:
        """``"inside the noise, tied"`` or which of the two is better, beyond the noise."""
        if self.covers_zero:
            return "inside the noise, tied"
        better, worse = (name_a, name_b) if self.observed > 0 else (name_b, name_a)
        return f"{better} better than {worse}, beyond the noise"

    def describe(self, name_a="A", name_b="B", digits=3) -> str:
        """The difference, its interval and the verdict in one line, naming both sides."""
        return (
            f"{name_a} - {name_b}: {self.observed:+.{digits}f}, "
            f"{self.confidence:.0%} interval [{self.low:+.{digits}f}, {self.high:+.{digits}f}] "
            f"({self.method}): {self.verdict(name_a, name_b)}"
        )

    def __str__(self) -> str:
        return (
            f"difference {self.observed:+.3f}, {self.confidence:.0%} interval "
            f"[{self.low:+.3f}, {self.high:+.3f}]: {self.verdict()}"
        )


def seed_difference(values_a, values_b, confidence=0.95) -> Difference:
    """Difference of two methods' means over seeds, with a Welch t interval.

    ``values_a`` and ``values_b``: mappings ``{seed: value}`` with at least two seeds each
    (their seeds may differ). For a few seconds-long trainings repeated per seed, where a
    per-image bootstrap would ignore the run-to-run spread. Introduced in notebook 01.
    """
    from scipy.stats import t as student_t  # SciPy comes with scikit-learn

    confidence = _check_confidence(confidence)
    a = _seed_values(values_a, "values_a")
    b = _seed_values(values_b, "values_b")
    variance_a, variance_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    standard_error = math.sqrt(variance_a + variance_b)
    observed = float(a.mean() - b.mean())
    if standard_error == 0.0:
        return Difference(observed, observed, observed, confidence, "Welch t over seeds")
    dof = (variance_a + variance_b) ** 2 / (
        variance_a**2 / (len(a) - 1) + variance_b**2 / (len(b) - 1)
    )
    half = float(student_t.ppf(0.5 + 0.5 * confidence, dof)) * standard_error
    return Difference(observed, observed - half, observed + half, confidence, "Welch t over seeds")


def bootstrap_indices(count, resamples=RESAMPLES, seed=SEED) -> np.ndarray:
    """``[resamples, count]`` image indices drawn with replacement, from a fixed seed.

    Introduced in notebook 01.
    """
    count = check_count("count", count)
    resamples = check_count("resamples", resamples)
    seed = check_count("seed", seed, minimum=0)
    return np.random.default_rng(seed).integers(0, count, size=(resamples, count))


def _percentile_difference(differences, observed, confidence, method) -> Difference:
    tail = 50.0 * (1.0 - confidence)
    low, high = np.nanpercentile(differences, [tail, 100.0 - tail])
    return Difference(float(observed), float(low), float(high), confidence, method)


def _take(values, indices):
    if isinstance(values, np.ndarray):
        return values[indices]
    return [values[index] for index in indices]


def paired_bootstrap(
    metric: Callable,
    per_image_a: Sequence,
    per_image_b: Sequence,
    resamples=RESAMPLES,
    confidence=0.95,
    seed=SEED,
) -> Difference:
    """Paired bootstrap interval of ``metric(A) - metric(B)`` over the same images.

    ``per_image_a`` / ``per_image_b``: one entry per image, the same images in the same
    order (NumPy arrays are indexed along axis 0, other sequences entry by entry);
    ``metric`` maps such a sequence to a number. Each resample draws image indices with
    replacement (``bootstrap_indices``) and recomputes both metrics on that same draw;
    the interval is the central ``confidence`` percentiles of the differences. For
    accuracy pass ``np.mean`` and ``correct_per_image`` of each method. For mAP use
    ``map_bootstrap``, which does the same thing much faster.

    Introduced in notebook 01.
    """
    if not callable(metric):
        fail("metric", metric, "a function of one method's per-image values")
    check_same_length("per_image_a", per_image_a, "per_image_b", per_image_b)
    confidence = _check_confidence(confidence)
    indices = bootstrap_indices(len(per_image_a), resamples, seed)
    observed = metric(per_image_a) - metric(per_image_b)
    differences = np.array(
        [metric(_take(per_image_a, draw)) - metric(_take(per_image_b, draw)) for draw in indices],
        dtype=np.float64,
    )
    return _percentile_difference(differences, observed, confidence, "paired bootstrap")


@dataclass(frozen=True)
class _ClassMatches:
    """One class's detections over the data set, matched once, in the devkit's order."""

    image: np.ndarray  # [D] image index of each detection, descending score order
    rank: np.ndarray  # [D] its position among its image's detections of the class
    score: np.ndarray  # [D] float64
    true_positive: np.ndarray  # [D] float 0/1, the devkit's flag within its image
    tied: np.ndarray  # [D] bool: tied in its image with a detection of the other flag
    ground_truth_per_image: np.ndarray  # [images] boxes of this class in each image


def _mixed_ties(scores, true_positive) -> np.ndarray:
    """Which of one image's sorted detections share their score with one of the other flag.

    Only those need their copies spread out in a resample: copies of a tie whose flags
    all agree give the same curve in any order.
    """
    if len(scores) == 0:
        return np.zeros(0, bool)
    run = np.cumsum(np.r_[True, scores[1:] != scores[:-1]]) - 1
    hits = np.bincount(run, weights=true_positive)
    sizes = np.bincount(run)
    return ((hits > 0) & (hits < sizes))[run]


def match_detections(ground_truths, detections, iou_threshold=0.5) -> list[_ClassMatches]:
    """Each image's detections matched to its own ground truth once, per class.

    The VOC rule only lets detections of one image compete for that image's boxes, so a
    detection's true/false-positive flag does not depend on the other images: resampling
    images only repeats or drops flags. Detections are kept in the order
    ``utils.metrics.mean_average_precision`` sorts them (score descending, ties in image
    then input order). Inputs as ``mean_average_precision``; the result is what
    ``resampled_map`` takes. Introduced in notebook 07.
    """
    check_same_length("ground_truths", ground_truths, "detections", detections)
    check_number("iou_threshold", iou_threshold, 0.0, 1.0, low_open=True)
    ground_truths, detections = checked_images(ground_truths, detections)
    labels = [labels for _, labels in ground_truths if len(labels)]
    classes = np.unique(np.concatenate(labels)).tolist() if labels else []
    overlaps = [
        box_ops.iou(boxes, gt_boxes)
        for (gt_boxes, _), (boxes, _, _) in zip(ground_truths, detections, strict=True)
    ]
    matches = []
    for label in classes:
        columns = {"image": [], "rank": [], "score": [], "true_positive": [], "tied": []}
        counts = []
        for index, (truth, found, overlap) in enumerate(
            zip(ground_truths, detections, overlaps, strict=True)
        ):
            true_positive, scores, count = _match_class(
                [truth], [found], [overlap], label, iou_threshold
            )
            columns["tied"].append(_mixed_ties(scores, true_positive))
            columns["image"].append(np.full(len(scores), index))
            columns["rank"].append(np.arange(len(scores)))
            columns["score"].append(scores)
            columns["true_positive"].append(true_positive.astype(np.float64))
            counts.append(count)
        columns = {name: np.concatenate(values) for name, values in columns.items()}
        order = np.lexsort((columns["rank"], columns["image"], -columns["score"]))
        columns = {name: values[order] for name, values in columns.items()}
        matches.append(_ClassMatches(**columns, ground_truth_per_image=np.array(counts)))
    return matches


def _detection_copies(match: _ClassMatches, weights: np.ndarray):
    """Copies ``[C, R]`` of each point of the resampled precision curve, and their flags ``[C]``.

    ``weights``: ``[images, R]``. A detection drawn w times becomes w copies; untied ones
    are one row holding w, in the devkit's order (score, then image, then input order). A
    run of copies of one detection changes the curve as its w single copies would: the
    precision rises along copies of a true positive and falls along copies of a false
    positive, so the envelope and the 11-point maxima are reached at a run's ends.
    Detections tied with one of the other flag in the same image (``_mixed_ties``) are
    spread into one 0/1 row per copy, ordered as the devkit orders an image listed several
    times: copy by copy.
    """
    copies = weights[match.image]
    if not match.tied.any():
        return copies, match.true_positive
    repeats = int(weights.max())
    tied, untied = np.flatnonzero(match.tied), np.flatnonzero(~match.tied)
    source = np.concatenate([untied, np.repeat(tied, repeats)])
    copy = np.concatenate([np.zeros(len(untied), int), np.tile(np.arange(repeats), len(tied))])
    spread = np.arange(len(source)) >= len(untied)
    order = np.lexsort((match.rank[source], copy, match.image[source], -match.score[source]))
    source, copy, spread = source[order], copy[order], spread[order]
    rows = copies[source]
    rows[spread] = rows[spread] > copy[spread, None]
    return rows, match.true_positive[source]


def _class_average_precision(match: _ClassMatches, weights: np.ndarray, method: str):
    """AP ``[R]`` of one class on each resample; ``weights`` ``[images, R]`` copies of each image.

    NaN where the resample holds no ground truth of the class (``mean_average_precision``
    then leaves the class out). Detections run along axis 0, resamples along axis 1, so
    the cumulative sums add whole contiguous rows.
    """
    ground_truth = match.ground_truth_per_image @ weights
    copies, true_positive = _detection_copies(match, weights)
    hit_copies = copies * true_positive[:, None]
    hits = np.cumsum(hit_copies, axis=0)
    seen = np.cumsum(copies, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = hits / np.maximum(seen, 1.0)
        if method == "all-point":
            envelope = np.maximum.accumulate(precision[::-1], axis=0)[::-1]
            ap = (hit_copies * envelope).sum(axis=0) / ground_truth
        else:
            recall = hits / ground_truth
            ap = np.mean(
                [
                    np.where(recall >= threshold, precision, 0.0).max(axis=0, initial=0.0)
                    for threshold in np.linspace(0, 1, 11)
                ],
                axis=0,
            )
    return np.where(ground_truth > 0, ap, np.nan)


def resampled_map(matches, weights, method="all-point") -> np.ndarray:
    """mAP ``[R]`` of each resample from ``match_detections``' cached matches.

    ``weights``: ``[R, images]`` how many times each image is in each resample (a row of
    ones is the data set itself). Equal (to rounding) to
    ``utils.metrics.mean_average_precision`` on the explicitly resampled lists, duplicate
    images included, with the drawn images listed in index order; where no two detections
    of a class share a score, in any order (the devkit breaks score ties by list order).

    Introduced in notebook 07.
    """
    check_choice("method", method, METHODS)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or np.any(weights < 0) or np.any(weights != np.round(weights)):
        raise ValueError(
            f"weights has shape {weights.shape}: expected [resamples, images] integer counts >= 0"
        )
    if not matches:
        return np.full(len(weights), np.nan)
    repeats = int(weights.max(initial=0))
    rows = max(1, max(len(match.image) + (repeats - 1) * match.tied.sum() for match in matches))
    block = max(1, _BLOCK_ELEMENTS // rows)
    maps = []
    for start in range(0, len(weights), block):
        block_weights = np.ascontiguousarray(weights[start : start + block].T)
        aps = np.stack(
            [_class_average_precision(match, block_weights, method) for match in matches]
        )
        present = ~np.isnan(aps)
        with np.errstate(invalid="ignore"):
            maps.append(np.nansum(aps, axis=0) / present.sum(axis=0))
    return np.concatenate(maps)


def _image_weights(count, resamples, seed) -> np.ndarray:
    indices = bootstrap_indices(count, resamples, seed)
    rows = np.repeat(np.arange(len(indices)), count)
    weights = np.zeros((len(indices), count), dtype=np.float64)
    np.add.at(weights, (rows, indices.ravel()), 1.0)
    return weights


def _resampled_maps(ground_truths, detection_sets, iou_threshold, method, resamples, seed):
    """Per detection set, its mAP on the data set (entry 0) and on each bootstrap draw of
    images (the same draws for every set)."""
    check_choice("method", method, METHODS)
    count = check_count("len(ground_truths)", len(ground_truths))
    weights = np.vstack([np.ones((1, count)), _image_weights(count, resamples, seed)])
    return [
        resampled_map(match_detections(ground_truths, detections, iou_threshold), weights, method)
        for detections in detection_sets
    ]


def map_bootstrap(
    ground_truths,
    detections_a,
    detections_b,
    iou_threshold=0.5,
    method="all-point",
    resamples=RESAMPLES,
    confidence=0.95,
    seed=SEED,
) -> Difference:
    """Paired bootstrap interval of ``mAP(A) - mAP(B)`` on the same images.

    Both detectors' detections are matched once per image (``match_detections``); each
    resample's mAPs are then recomputed from the cached flags (``resampled_map``), the two
    on the same draw of images (``bootstrap_indices``, the draws ``paired_bootstrap``
    makes). Inputs as ``utils.metrics.mean_average_precision``; ``observed`` is the
    difference of its mAPs on the data set itself. 1,000 resamples of 150 images take
    seconds.

    Introduced in notebook 07.
    """
    check_same_length("ground_truths", ground_truths, "detections_a", detections_a)
    check_same_length("ground_truths", ground_truths, "detections_b", detections_b)
    maps_a, maps_b = _resampled_maps(
        ground_truths, (detections_a, detections_b), iou_threshold, method, resamples, seed
    )
    confidence = _check_confidence(confidence)
    differences = maps_a - maps_b
    return _percentile_difference(differences[1:], differences[0], confidence, "paired bootstrap")


def map_interval(
    ground_truths,
    detections,
    iou_threshold=0.5,
    method="all-point",
    resamples=RESAMPLES,
    confidence=0.95,
    seed=SEED,
) -> tuple[float, float, float]:
    """``(mAP, low, high)``: one detector's mAP with a percentile bootstrap interval over images.

    Same draws and cached matching as ``map_bootstrap``. Introduced in notebook 07.
    """
    check_same_length("ground_truths", ground_truths, "detections", detections)
    (maps,) = _resampled_maps(ground_truths, (detections,), iou_threshold, method, resamples, seed)
    confidence = _check_confidence(confidence)
    tail = 50.0 * (1.0 - confidence)
    low, high = np.nanpercentile(maps[1:], [tail, 100.0 - tail])
    return float(maps[0]), float(low), float(high)

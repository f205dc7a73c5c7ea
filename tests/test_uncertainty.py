"""utils.uncertainty: Wilson against SciPy, seed spreads, paired bootstraps against explicit resamples."""

import time

import numpy as np
import pytest
from scipy.stats import binomtest, ttest_ind

from tests.test_metrics import random_scene, toy_scene
from utils import uncertainty
from utils.metrics import mean_average_precision


@pytest.mark.parametrize("trials", [1, 2, 5, 17, 100, 150, 1000, 10_000])
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_matches_scipy_on_every_count(trials, confidence):
    counts = range(trials + 1) if trials <= 150 else [0, 1, 2, trials // 3, trials - 1, trials]
    for successes in counts:
        expected = binomtest(successes, trials).proportion_ci(confidence, method="wilson")
        low, high = uncertainty.wilson_interval(successes, trials, confidence)
        assert low == pytest.approx(expected.low, abs=1e-12)
        assert high == pytest.approx(expected.high, abs=1e-12)
        assert 0.0 <= low <= successes / trials <= high <= 1.0


def test_wilson_ends_are_exact_and_the_interval_narrows_with_n():
    assert uncertainty.wilson_interval(0, 50)[0] == 0.0
    assert uncertainty.wilson_interval(50, 50)[1] == 1.0
    narrow, wide = uncertainty.wilson_interval(900, 1000), uncertainty.wilson_interval(9, 10)
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((5, 4), r"^successes=5: expected an integer <= trials=4$"),
        ((-1, 4), r"^successes=-1: expected an integer >= 0$"),
        ((0, 0), r"^trials=0: expected an integer >= 1$"),
        ((1, 4, 1.0), r"^confidence=1.0: expected a finite number in \(0.0, 1.0\)$"),
    ],
)
def test_wilson_rejects_bad_input(arguments, message):
    with pytest.raises(ValueError, match=message):
        uncertainty.wilson_interval(*arguments)


def test_accuracy_interval_from_ids_and_from_scores():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    predictions = np.where(rng.uniform(size=200) < 0.7, labels, (labels + 1) % 4)
    scores = np.eye(4)[predictions] + rng.uniform(0, 0.1, (200, 4))
    k = int((predictions == labels).sum())
    expected = binomtest(k, 200).proportion_ci(method="wilson")
    for given in (predictions, scores):
        accuracy, low, high = uncertainty.accuracy_interval(given, labels)
        assert accuracy == k / 200
        assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert uncertainty.accuracy_interval(predictions, np.eye(4)[labels])[0] == k / 200
    with pytest.raises(ValueError, match="predictions has 3 entries and labels 2"):
        uncertainty.accuracy_interval([0, 1, 2], [0, 1])


def test_mean_std_names_seeds_and_refuses_one_value():
    assert uncertainty.mean_std({0: 0.90, 1: 0.92, 2: 0.94}) == pytest.approx((0.92, 0.02))
    assert uncertainty.format_mean_std({0: 0.904, 1: 0.912, 2: 0.920}) == "0.912 ± 0.008 (3 seeds)"
    with pytest.raises(ValueError, match="expected at least 2 seeds for a spread"):
        uncertainty.mean_std({0: 0.9})
    with pytest.raises(ValueError, match=r"expected a mapping \{seed: value\}"):
        uncertainty.mean_std([0.9, 0.8])
    assert uncertainty.format_interval(0.9123, 0.89, 0.931) == "0.912 [0.890, 0.931]"


def test_seed_difference_is_welchs_t_interval():
    a, b = {0: 0.91, 1: 0.93, 2: 0.90}, {10: 0.85, 11: 0.88, 12: 0.84, 13: 0.86}
    result = uncertainty.seed_difference(a, b)
    welch = ttest_ind(list(a.values()), list(b.values()), equal_var=False)
    interval = welch.confidence_interval(0.95)
    assert result.observed == pytest.approx(np.mean(list(a.values())) - np.mean(list(b.values())))
    assert (result.low, result.high) == pytest.approx((interval.low, interval.high), rel=1e-9)
    assert not result.covers_zero
    tied = uncertainty.seed_difference({0: 0.90, 1: 0.95}, {0: 0.92, 1: 0.91})
    assert tied.covers_zero and "tied" in str(tied)


def test_paired_bootstrap_of_accuracy_resamples_the_same_images():
    rng = np.random.default_rng(1)
    truth = rng.uniform(size=400) < 0.8
    # B is A with 40 of A's correct answers turned wrong: better only on the same images.
    flipped = truth.copy()
    flipped[np.flatnonzero(truth)[:40]] = False
    result = uncertainty.paired_bootstrap(np.mean, truth, flipped)
    assert result.observed == pytest.approx(40 / 400)
    assert 0.0 < result.low < result.observed < result.high
    assert result.verdict("A", "B") == "A better than B, beyond the noise"
    # Same draws as bootstrap_indices: the interval is the percentiles of those differences.
    draws = uncertainty.bootstrap_indices(400)
    differences = truth[draws].mean(1) - flipped[draws].mean(1)
    assert (result.low, result.high) == pytest.approx(
        tuple(np.percentile(differences, [2.5, 97.5]))
    )
    same = uncertainty.paired_bootstrap(np.mean, truth, truth.copy())
    assert (same.observed, same.low, same.high) == (0.0, 0.0, 0.0) and same.covers_zero
    # Lists of per-image records work too, and the seed fixes the result.
    listed = uncertainty.paired_bootstrap(
        lambda rows: np.mean([row["hit"] for row in rows]),
        [{"hit": value} for value in truth],
        [{"hit": value} for value in flipped],
    )
    assert (listed.low, listed.high) == (result.low, result.high)


def test_paired_bootstrap_is_narrower_than_unpaired_intervals_suggest():
    """Two correlated classifiers: their Wilson intervals overlap, the paired one does not."""
    rng = np.random.default_rng(2)
    a = rng.uniform(size=300) < 0.75
    b = a.copy()
    b[np.flatnonzero(a)[:12]] = False
    low_a, _ = uncertainty.wilson_interval(int(a.sum()), 300)
    _, high_b = uncertainty.wilson_interval(int(b.sum()), 300)
    assert high_b > low_a
    assert uncertainty.paired_bootstrap(np.mean, a, b).low > 0


def test_difference_describes_itself():
    difference = uncertainty.Difference(0.012, -0.010, 0.034, 0.95, "paired bootstrap")
    assert (
        str(difference)
        == "difference +0.012, 95% interval [-0.010, +0.034]: inside the noise, tied"
    )
    assert difference.describe("CNN", "HOG") == (
        "CNN - HOG: +0.012, 95% interval [-0.010, +0.034] (paired bootstrap): inside the noise, tied"
    )
    worse = uncertainty.Difference(-0.05, -0.08, -0.02, 0.95, "paired bootstrap")
    assert worse.verdict("CNN", "HOG") == "HOG better than CNN, beyond the noise"


def explicit_map(ground_truths, detections, draw, method="all-point"):
    return mean_average_precision(
        [ground_truths[i] for i in draw], [detections[i] for i in draw], method=method
    )["mAP"]


def weights_of(draws, images):
    return np.stack([np.bincount(draw, minlength=images) for draw in draws]).astype(float)


@pytest.mark.parametrize("method", ["all-point", "11-point"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampled_map_equals_map_of_the_explicit_resample(method, seed):
    rng = np.random.default_rng(seed)
    ground_truths, detections = random_scene(rng, images=12, classes=3)
    matches = uncertainty.match_detections(ground_truths, detections)
    draws = rng.integers(0, 12, (40, 12))
    draws[0] = np.arange(12)
    draws[1] = 3  # one image twelve times
    got = uncertainty.resampled_map(matches, weights_of(draws, 12), method)
    expected = [explicit_map(ground_truths, detections, draw, method) for draw in draws]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_resampled_map_with_scores_tied_across_images_and_classes_missing():
    """Ties across images follow the devkit's order; a class absent from a draw is left out."""
    rng = np.random.default_rng(5)
    ground_truths, detections = random_scene(rng, images=10, classes=4)
    detections = [(b, labels, np.round(scores, 1)) for b, labels, scores in detections]
    matches = uncertainty.match_detections(ground_truths, detections)
    draws = np.sort(rng.integers(0, 10, (60, 10)), axis=1)
    draws[0] = [0] * 10
    for draw, value in zip(
        draws, uncertainty.resampled_map(matches, weights_of(draws, 10)), strict=True
    ):
        expected = explicit_map(ground_truths, detections, draw)
        assert value == pytest.approx(expected, abs=1e-12, nan_ok=True)


@pytest.mark.parametrize("method", ["all-point", "11-point"])
def test_resampled_map_when_every_score_is_the_same(method):
    """Saturated scores (all 1.0): every image's true and false positives tie."""
    rng = np.random.default_rng(7)
    ground_truths, detections = random_scene(rng, images=8, classes=2)
    detections = [(b, labels, np.ones(len(labels))) for b, labels, _ in detections]
    matches = uncertainty.match_detections(ground_truths, detections)
    assert any(match.tied.any() for match in matches)
    draws = np.sort(rng.integers(0, 8, (30, 8)), axis=1)
    got = uncertainty.resampled_map(matches, weights_of(draws, 8), method)
    expected = [explicit_map(ground_truths, detections, draw, method) for draw in draws]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"weights has shape \(8,\): expected \[resamples"):
        uncertainty.resampled_map(matches, np.ones(8))


def test_resampled_map_on_the_toy_vector_and_on_no_detections():
    ground_truths, detections = toy_scene()
    matches = uncertainty.match_detections(ground_truths, detections)
    assert uncertainty.resampled_map(matches, np.ones((1, 2)))[0] == pytest.approx(0.8333, abs=1e-4)
    assert uncertainty.resampled_map(matches, np.ones((1, 2)), "11-point")[0] == pytest.approx(
        0.8409, abs=1e-4
    )
    empty = [(np.zeros((0, 4)), [], []) for _ in ground_truths]
    nothing = uncertainty.match_detections(ground_truths, empty)
    assert uncertainty.resampled_map(nothing, np.ones((3, 2))).tolist() == [0.0, 0.0, 0.0]


def test_map_bootstrap_identical_detectors_give_zero():
    ground_truths, detections = random_scene(np.random.default_rng(3), images=30)
    result = uncertainty.map_bootstrap(ground_truths, detections, detections)
    assert (result.observed, result.low, result.high) == (0.0, 0.0, 0.0)
    assert result.covers_zero


def test_map_bootstrap_finds_a_clearly_better_detector():
    rng = np.random.default_rng(4)
    ground_truths, detections = random_scene(rng, images=60)
    # A: the ground truth itself, confidently; B: the noisy random detector.
    perfect = [(b, labels, np.ones(len(labels))) for b, labels in ground_truths]
    result = uncertainty.map_bootstrap(ground_truths, perfect, detections)
    observed = 1.0 - mean_average_precision(ground_truths, detections)["mAP"]
    assert result.observed == pytest.approx(observed, abs=1e-12)
    assert 0.0 < result.low < result.observed < result.high
    assert not result.covers_zero
    value, low, high = uncertainty.map_interval(ground_truths, detections)
    assert value == pytest.approx(1.0 - observed, abs=1e-12)
    assert low < value < high


def test_map_bootstrap_of_150_images_takes_seconds():
    rng = np.random.default_rng(6)
    ground_truths, detections = random_scene(rng, images=150, classes=5)
    other = [(b, labels, rng.uniform(size=len(scores))) for b, labels, scores in detections]
    start = time.perf_counter()
    uncertainty.map_bootstrap(ground_truths, detections, other)
    # "A few seconds" on an idle core; the bound leaves room for a shared machine.
    assert time.perf_counter() - start < 20


def test_map_bootstrap_rejects_mismatched_lists():
    ground_truths, detections = toy_scene()
    with pytest.raises(ValueError, match="ground_truths has 2 entries and detections_b 1"):
        uncertainty.map_bootstrap(ground_truths, detections, detections[:1])
    with pytest.raises(ValueError, match=r"^method='coco': expected one of"):
        uncertainty.map_bootstrap(ground_truths, detections, detections, method="coco")

"""utils.digits and utils.handcrafted: the notebook-01 data and hand-designed features."""

import numpy as np
import pytest
from scipy.signal import correlate2d

from utils.digits import load_jittered_digits
from utils.handcrafted import (
    conv_weights,
    designed_filter_bank,
    filter_responses,
    gabor_kernels,
    hog_features,
    sobel_kernels,
)


def test_split_shapes_ranges_and_determinism():
    a = load_jittered_digits(train_copies=2, seed=3)
    b = load_jittered_digits(train_copies=2, seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.x_train.shape[1:] == (32, 32) and a.x_train.dtype == np.float32
    assert len(a.x_train) == 2 * 1257 and len(a.x_test) == 540
    assert a.x_train.min() >= 0.0 and a.x_train.max() <= 1.0
    assert np.bincount(a.y_test).min() >= 52  # stratified: every class present
    assert a.class_names == tuple("0123456789")


def test_train_and_test_digits_are_disjoint():
    split = load_jittered_digits(jitter=False, noise=0.0, seed=1)
    train = {image.tobytes() for image in split.x_train}
    assert not any(image.tobytes() in train for image in split.x_test)


def test_centred_digits_sit_in_the_middle():
    split = load_jittered_digits(jitter=False, noise=0.0, digit_sizes=(16, 16), seed=0)
    ink = split.x_test.sum(axis=0)
    rows, cols = np.nonzero(ink)
    assert rows.min() >= 8 and rows.max() < 24 and cols.min() >= 8 and cols.max() < 24


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"digit_sizes": (10, 40)}, r"digit_sizes=\(10, 40\)"),
        ({"train_copies": 0}, r"train_copies=0"),
        ({"test_fraction": 1.0}, r"test_fraction=1.0"),
        ({"noise": -1}, r"noise=-1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_jittered_digits(**kwargs)


def test_hog_feature_length_and_validation():
    features = hog_features(np.random.default_rng(0).random((3, 32, 32)))
    assert features.shape == (3, 3 * 3 * 2 * 2 * 9) and features.dtype == np.float32
    assert hog_features(np.random.default_rng(1).random((2, 32, 32, 1))).shape == (2, 324)
    with pytest.raises(ValueError, match=r"images has shape \(32, 32\)"):
        hog_features(np.zeros((32, 32)))


def test_sobel_finds_a_vertical_edge():
    image = np.zeros((9, 9), np.float32)
    image[:, 5:] = 1.0
    responses = filter_responses(image, sobel_kernels())
    assert responses.shape == (9, 9, 2)
    assert np.abs(responses[4, :, 0]).argmax() in (4, 5)
    assert np.allclose(responses[2:7, 2:7, 1], 0.0)


def test_filter_responses_is_cross_correlation():
    image = np.random.default_rng(0).random((12, 12)).astype(np.float32)
    kernels = gabor_kernels(size=5, orientations=3)
    assert kernels.shape == (3, 5, 5)
    responses = filter_responses(image, kernels)
    for index, kernel in enumerate(kernels):
        expected = correlate2d(image, kernel, mode="valid")
        np.testing.assert_allclose(responses[2:-2, 2:-2, index], expected, atol=1e-5)


def test_gabor_validation():
    with pytest.raises(ValueError, match=r"size=4: expected an odd kernel size"):
        gabor_kernels(size=4)
    with pytest.raises(ValueError, match=r"phase='real': expected one of"):
        gabor_kernels(phase="real")


def test_validation_split_is_disjoint_by_source_digit():
    split = load_jittered_digits(jitter=False, noise=0.0, validation_fraction=0.2, seed=1)
    assert len(split.x_val) == len(split.y_val) > 0
    assert len(split.x_train) + len(split.x_val) == 3 * 1257 - 2 * len(split.x_val)
    train = {image.tobytes() for image in split.x_train}
    test = {image.tobytes() for image in split.x_test}
    assert not any(image.tobytes() in train or image.tobytes() in test for image in split.x_val)
    assert np.bincount(split.y_val).min() > 0
    assert load_jittered_digits(seed=1).x_val is None
    with pytest.raises(ValueError, match=r"validation_fraction=1.0"):
        load_jittered_digits(validation_fraction=1.0)


def test_larger_sobel_and_odd_gabor():
    sobel = sobel_kernels(5)
    assert sobel.shape == (2, 5, 5)
    np.testing.assert_allclose(sobel[0], -sobel[0][:, ::-1])  # antisymmetric in x
    np.testing.assert_allclose(sobel[1], sobel[0].T)
    odd = gabor_kernels(size=5, orientations=2, phase="odd")
    np.testing.assert_allclose(odd.sum(axis=(1, 2)), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"size=4: expected 3, 5 or 7"):
        sobel_kernels(4)


def test_designed_bank_is_a_zero_mean_unit_norm_stripe_and_edge_bank():
    kernels, names = designed_filter_bank(5)
    assert kernels.shape == (16, 5, 5) and len(names) == 16 and len(set(names)) == 16
    np.testing.assert_allclose(kernels.sum(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(kernels, axis=(1, 2)), 1.0, atol=1e-5)
    stripe = kernels[names.index("stripe 0°")]
    # a real stripe detector: a positive centre column between negative side lobes
    assert stripe[2, 2] > 0 and stripe[2, 0] < 0 and stripe[2, 4] < 0
    np.testing.assert_allclose(kernels[names.index("-Sobel x")], -kernels[0])


def test_conv_weights_layout():
    kernels = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    weights = conv_weights(kernels)
    assert weights.shape == (3, 3, 1, 2)
    np.testing.assert_array_equal(weights[:, :, 0, 1], kernels[1])
    with pytest.raises(ValueError, match=r"kernels="):
        conv_weights(np.zeros((3, 3)))

"""utils.checks: every check accepts what it promises and names argument, value and expectation."""

import numpy as np
import pytest

from utils import checks


def test_check_count_accepts_numpy_integers_and_returns_int():
    assert checks.check_count("n", np.int64(3)) == 3
    assert type(checks.check_count("n", np.int32(3))) is int
    assert checks.check_count("n", 0, minimum=0) == 0


@pytest.mark.parametrize("value", [0, -1, 2.0, True, "3", None])
def test_check_count_rejects_with_the_house_message(value):
    with pytest.raises(ValueError, match=rf"^n={value!r}: expected an integer >= 1$"):
        checks.check_count("n", value)


def test_check_number_intervals():
    assert checks.check_number("x", 0.5, 0, 1) == 0.5
    assert checks.check_fraction("f", 1) == 1.0
    with pytest.raises(ValueError, match=r"f=1.0: expected a finite number in \[0.0, 1.0\)"):
        checks.check_fraction("f", 1.0, high_open=True)
    with pytest.raises(ValueError, match=r"s=0: expected a finite number in \(0.0, inf\)"):
        checks.check_positive("s", 0)
    for bad in (float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="expected a finite number"):
            checks.check_number("x", bad)


def test_check_pair_and_choice():
    assert checks.check_pair("p", 7) == (7, 7)
    assert checks.check_pair("p", (2, np.int64(3))) == (2, 3)
    for bad in ((1, 2, 3), (0, 1), 2.5, "ab", None):
        with pytest.raises(ValueError, match="expected an integer >= 1 or a pair of them"):
            checks.check_pair("p", bad)
    assert checks.check_choice("mode", "fast", ("fast", "full")) == "fast"
    with pytest.raises(ValueError, match=r"mode='slow': expected one of \('fast', 'full'\)"):
        checks.check_choice("mode", "slow", ("fast", "full"))


def test_check_range_and_threshold_order():
    assert checks.check_range("r", (0.1, 0.2), 0, 1) == (0.1, 0.2)
    with pytest.raises(ValueError, match=r"r=\(0.3, 0.2\): expected \(low, high\)"):
        checks.check_range("r", (0.3, 0.2), 0, 1)
    checks.check_threshold_order("low", 0.3, "high", 0.7)
    with pytest.raises(ValueError, match="low=0.8, high=0.7: expected 0 <= low <= high <= 1"):
        checks.check_threshold_order("low", 0.8, "high", 0.7)


def test_image_and_box_checks():
    image = np.zeros((4, 5, 3), np.uint8)
    assert checks.check_rgb_image(image) is not None
    with pytest.raises(ValueError, match=r"image has shape \(4, 5\) and dtype uint8: expected RGB"):
        checks.check_rgb_image(image[..., 0])
    with pytest.raises(ValueError, match="dtype float32"):
        checks.check_rgb_image(image.astype(np.float32))
    batch = np.zeros((2, 4, 5, 3), np.uint8)
    assert checks.check_rgb_images(batch, size=(4, 5)).shape == (2, 4, 5, 3)
    with pytest.raises(ValueError, match=r"expected RGB uint8 \[N, 8, 8, 3\]"):
        checks.check_rgb_images(batch, size=(8, 8))
    assert checks.check_boxes([]).shape == (0, 4)
    with pytest.raises(ValueError, match=r"boxes has shape \(3,\): expected \[N, 4\]"):
        checks.check_boxes([1, 2, 3])


def test_check_same_length():
    checks.check_same_length("images", [1, 2], "proposals", [3, 4])
    with pytest.raises(
        ValueError, match="^images has 2 entries and proposals 1: expected one per image$"
    ):
        checks.check_same_length("images", [1, 2], "proposals", [3])

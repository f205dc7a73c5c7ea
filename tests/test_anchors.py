"""Faster R-CNN anchors: count, order, centres and shapes."""

import numpy as np
import pytest

from utils import boxes
from utils.anchors import generate_anchors


def test_count_dtype_and_anchor_fastest_order():
    anchors = generate_anchors(3, 4, stride=16, sizes=(32, 64), ratios=(0.5, 1.0, 2.0))
    assert anchors.shape == (3 * 4 * 6, 4) and anchors.dtype == np.float32
    grid = anchors.reshape(3, 4, 6, 4)  # what an NHWC head's [H, W, A * 4] reshapes to
    centres = boxes.xyxy_to_cxcywh(grid)[..., :2]
    for i in range(3):
        for j in range(4):
            np.testing.assert_allclose(centres[i, j], [[(j + 0.5) * 16, (i + 0.5) * 16]] * 6)


def test_ratio_is_height_over_width_and_area_is_size_squared():
    anchors = generate_anchors(1, 1, stride=16, sizes=(128, 256, 512), ratios=(0.5, 1.0, 2.0))
    _, _, widths, heights = boxes.xyxy_to_cxcywh(anchors).T
    ratios = np.repeat([0.5, 1.0, 2.0], 3)  # ratios outer, sizes inner
    sizes = np.tile([128, 256, 512], 3)
    np.testing.assert_allclose(heights / widths, ratios, rtol=1e-6)
    np.testing.assert_allclose(widths * heights, sizes**2.0, rtol=1e-6)
    np.testing.assert_allclose(anchors[4], [8 - 128, 8 - 128, 8 + 128, 8 + 128])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0, 4, 16, (32,), (1,)), r"feature_height=0: expected an integer >= 1"),
        ((2, 2.5, 16, (32,), (1,)), r"feature_width=2.5: expected an integer >= 1"),
        ((2, 2, 0, (32,), (1,)), r"stride=0: expected a finite number in \(0.0, inf\)"),
        ((2, 2, 16, (), (1,)), r"sizes=\(\): expected a non-empty sequence of positive numbers"),
        ((2, 2, 16, (32,), (1, -2)), r"ratios=\(1, -2\): expected a non-empty sequence"),
    ],
)
def test_bad_arguments_are_rejected(arguments, message):
    with pytest.raises(ValueError, match=message):
        generate_anchors(*arguments)

"""utils.losses: smooth L1 and the true class's deltas, by hand."""

import numpy as np
import pytest
from keras import ops

from utils.losses import smooth_l1, true_class_deltas


@pytest.mark.parametrize("beta", [1.0, 1 / 9])
def test_smooth_l1_is_quadratic_then_linear_and_continuous(beta):
    x = np.array([0.0, 0.5 * beta, -beta, 2.0, -3.0], np.float32)
    expected = np.where(np.abs(x) < beta, 0.5 * x**2 / beta, np.abs(x) - 0.5 * beta)
    np.testing.assert_allclose(ops.convert_to_numpy(smooth_l1(x, beta)), expected, rtol=1e-6)
    edge = ops.convert_to_numpy(smooth_l1(np.array([beta - 1e-4, beta + 1e-4]), beta))
    assert abs(edge[1] - edge[0]) < 1e-3


def test_true_class_deltas_pick_the_label_columns():
    deltas = np.arange(3 * 8, dtype=np.float32).reshape(3, 8)  # 2 classes
    labels = np.array([1, 2, 0])  # class 0, class 1, background
    picked = ops.convert_to_numpy(true_class_deltas(deltas, labels))
    np.testing.assert_array_equal(picked, [deltas[0, :4], deltas[1, 4:], deltas[2, :4]])

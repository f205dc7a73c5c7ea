"""utils.losses: smooth L1, the true class's deltas and focal loss, by hand."""

import numpy as np
import pytest
from keras import ops

from utils.losses import sigmoid_focal_loss, smooth_l1, true_class_deltas


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


# torchvision.ops.sigmoid_focal_loss's formula, computed by hand with NumPy on these inputs:
# p = sigmoid(x), ce = BCE(x, t), p_t = p t + (1 - p)(1 - t), loss = alpha_t ce (1 - p_t)^gamma.
FOCAL_LOGITS = np.array([[-2.0, -0.5, 0.0], [1.5, 3.0, -4.0]], np.float32)
FOCAL_TARGETS = np.array([[0, 1, 0], [1, 1, 0]], np.float32)
FOCAL_EXPECTED = {
    (0.25, 2.0): [[1.35267213e-03, 9.43529002e-02, 1.29965096e-01],
                  [1.67571173e-03, 2.73208311e-05, 4.40367729e-06]],
    (None, 0.0): [[0.12692801, 0.97407698, 0.69314718],
                  [0.20141328, 0.04858735, 0.01814993]],
    (0.5, 1.0): [[7.56509490e-03, 3.03161654e-01, 1.73286795e-01],
                 [1.83714614e-02, 1.15214879e-03, 1.63224207e-04]],
}  # fmt: skip


@pytest.mark.parametrize(("alpha", "gamma"), list(FOCAL_EXPECTED))
def test_sigmoid_focal_loss_matches_torchvisions_formula(alpha, gamma):
    loss = ops.convert_to_numpy(sigmoid_focal_loss(FOCAL_LOGITS, FOCAL_TARGETS, alpha, gamma))
    np.testing.assert_allclose(loss, FOCAL_EXPECTED[(alpha, gamma)], rtol=1e-5, atol=1e-9)


def test_focal_loss_down_weights_easy_examples_more_than_cross_entropy():
    easy, hard = np.array([-6.0, 0.5], np.float32), np.zeros(2, np.float32)  # both negatives
    focal = ops.convert_to_numpy(sigmoid_focal_loss(easy, hard, None, 2.0))
    plain = ops.convert_to_numpy(sigmoid_focal_loss(easy, hard, None, 0.0))
    assert focal[0] / plain[0] < 1e-4 < focal[1] / plain[1]


@pytest.mark.parametrize(
    ("alpha", "gamma", "message"),
    [(1.5, 2.0, r"alpha=1\.5: expected"), (0.25, -1.0, r"gamma=-1\.0: expected")],
)
def test_sigmoid_focal_loss_rejects_bad_parameters(alpha, gamma, message):
    with pytest.raises(ValueError, match=message):
        sigmoid_focal_loss(FOCAL_LOGITS, FOCAL_TARGETS, alpha, gamma)

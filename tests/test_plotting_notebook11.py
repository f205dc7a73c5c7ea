"""utils.plotting's notebook 11 helpers: pipelines as rows of boxes, anchors' targets."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from utils.plotting import draw_anchor_targets, draw_pipelines  # noqa: E402


def test_draw_pipelines_leaves_a_blank_for_a_missing_stage():
    figure = draw_pipelines([("two", ["a", "b", "c"], "#eee"), ("one", ["a", "", "c"], "#ddd")])
    ax = figure.axes[0]
    assert len(ax.patches) == 5 + 3  # five boxes, two + one arrows
    assert [t.get_text() for t in ax.texts].count("b") == 1
    plt.close(figure)
    with pytest.raises(ValueError, match=r"rows=\[\]: expected"):
        draw_pipelines([])


def test_draw_anchor_targets_draws_positives_ignored_and_truth():
    image = np.zeros((32, 32, 3), np.uint8)
    anchors = np.array([[0, 0, 8, 8], [4, 4, 12, 12], [10, 10, 20, 20]], np.float32)
    ax = draw_anchor_targets(image, anchors, np.array([2, -1, 0]), np.array([[1, 1, 9, 9]]))
    assert len(ax.patches) == 3  # one ignored, one positive, one ground truth; no background
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="anchor_labels has 2 entries and anchors 3 rows"):
        draw_anchor_targets(image, anchors, np.array([1, 0]), np.zeros((0, 4)))

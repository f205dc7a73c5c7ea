"""utils.plotting: grids draw one panel per item and refuse bad shapes clearly."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from utils import plotting, shapes  # noqa: E402
from utils.plotting import feature_map_grid, filter_grid, image_grid, save_figure  # noqa: E402


def visible_images(fig):
    return sum(len(ax.images) for ax in fig.axes)


def test_image_grid_gray_and_colour():
    fig = image_grid(np.zeros((5, 8, 8)), [str(i) for i in range(5)], ncols=3)
    assert visible_images(fig) == 5 and len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:5]] == ["0", "1", "2", "3", "4"]
    fig = image_grid(np.zeros((2, 8, 8, 3), np.uint8))
    assert visible_images(fig) == 2
    plt.close("all")


def test_feature_map_grid_limits_channels():
    fig = feature_map_grid(np.random.default_rng(0).random((1, 6, 6, 40)), max_maps=12, ncols=6)
    assert visible_images(fig) == 12
    plt.close("all")


def test_filter_grid_uses_a_symmetric_scale():
    kernels = np.random.default_rng(1).normal(size=(3, 3, 1, 4))
    fig = filter_grid(kernels)
    assert visible_images(fig) == 4
    for ax, index in zip(fig.axes, range(4), strict=True):
        low, high = ax.images[0].get_clim()
        assert low == -high == pytest.approx(-np.abs(kernels[..., 0, index]).max())
    plt.close("all")


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"titles has 1 entries: expected one per image \(2\)"):
        image_grid(np.zeros((2, 4, 4)), ["a"])
    with pytest.raises(ValueError, match=r"count=0"):
        image_grid([])
    with pytest.raises(ValueError, match=r"feature_maps has shape \(4, 4\)"):
        feature_map_grid(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"kernels has shape \(3, 3\)"):
        filter_grid(np.zeros((3, 3)))


def test_save_figure(tmp_path):
    fig = image_grid(np.zeros((1, 4, 4)))
    path = save_figure(fig, "grid", tmp_path)
    assert path == tmp_path / "grid.png" and path.stat().st_size > 0
    with pytest.raises(ValueError, match=r"name='a/b'"):
        save_figure(fig, "a/b", tmp_path)
    plt.close("all")


def test_draw_boxes_and_examples():
    data = shapes.make_shapes("detection", 2, seed=0)
    ax = plotting.draw_boxes(
        data.images[0],
        data.boxes[0],
        data.labels[0],
        class_names=data.class_names,
        scores=[0.9] * len(data.boxes[0]),
    )
    assert isinstance(ax, matplotlib.axes.Axes)
    assert len(ax.patches) == len(data.boxes[0])
    assert ax.texts[0].get_text().startswith(data.class_names[data.labels[0][0]])
    numbered = plotting.draw_boxes(data.images[0], data.boxes[0], data.labels[0])
    assert numbered.texts[0].get_text() == str(data.labels[0][0])
    figure = plotting.draw_examples(shapes.make_shapes("classification", 3), ncols=2)
    assert isinstance(figure, matplotlib.figure.Figure) and len(figure.axes) == 4
    plt.close("all")


def test_draw_localizations_draws_both_boxes_and_checks_lengths():
    images = np.zeros((3, 16, 16, 3), np.uint8)
    boxes = np.tile(np.array([[2.0, 2.0, 10.0, 12.0]], np.float32), (3, 1))
    figure = plotting.draw_localizations(images, boxes, boxes + 1, ["a", "b", "c"], ncols=2)
    first = figure.axes[0]
    assert len(first.patches) == 2 and first.get_title() == "a"
    with pytest.raises(ValueError, match="predicted"):
        plotting.draw_localizations(images, boxes, boxes[:2])
    plt.close("all")

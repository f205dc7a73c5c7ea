"""Figures the notebooks share: image, feature-map and filter grids; boxes on images; saving.

Each function returns the matplotlib Figure (or, for one image, the Axes) it drew
(introduced in notebook 01). Boxes are ``utils.boxes``' xyxy pixels; the drawing
functions take class names as an argument, so this module knows no dataset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from utils.checks import check_count
from utils.course import ROOT


def _grid_shape(count: int, ncols: int) -> tuple[int, int]:
    if count <= 0:
        raise ValueError(f"count={count}: expected at least one image to draw")
    if ncols <= 0:
        raise ValueError(f"ncols={ncols}: expected a positive number of columns")
    ncols = min(ncols, count)
    return math.ceil(count / ncols), ncols


def _panels(count: int, ncols: int, cell_size: float, *, titled: bool, suptitle: str | None):
    """A figure of ``count`` panels in rows of ``ncols``: ``(figure, axes)``, axes switched
    off (the spare ones at the end of the last row too); ``axes`` holds the first ``count``."""
    nrows, ncols = _grid_shape(count, check_count("ncols", ncols))
    # Each row gets room for its titles and a gap, so square images never touch.
    row_height = cell_size + (0.35 if titled else 0.15)
    height = row_height * nrows + (0.35 if suptitle else 0.0)
    figure, axes = plt.subplots(nrows, ncols, figsize=(cell_size * ncols, height), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return figure, list(axes.flat)[:count]


def _outline(ax, box, color, *, linestyle: str = "-", linewidth: float = 1.5) -> None:
    """An unfilled rectangle on ``ax`` for one xyxy ``box``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(
        Rectangle(
            (x1, y1),
            x2 - x1,
            y2 - y1,
            fill=False,
            edgecolor=color,
            linestyle=linestyle,
            linewidth=linewidth,
        )
    )


def _finish(figure, suptitle: str | None):
    if suptitle:
        figure.suptitle(suptitle)
    figure.tight_layout()
    return figure


def image_grid(
    images: Sequence[np.ndarray] | np.ndarray,
    titles: Sequence[str] | None = None,
    *,
    ncols: int = 8,
    cell_size: float = 1.4,
    cmap: str | None = "gray",
    suptitle: str | None = None,
):
    """Draw images ``[N, H, W]`` or ``[N, H, W, 3]`` (uint8 or floats) in a grid."""
    images = list(images)
    if titles is not None and len(titles) != len(images):
        raise ValueError(
            f"titles has {len(titles)} entries: expected one per image ({len(images)})"
        )
    fig, axes = _panels(len(images), ncols, cell_size, titled=titles is not None, suptitle=suptitle)
    for index, ax in enumerate(axes):
        image = np.asarray(images[index])
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        ax.imshow(image, cmap=cmap if image.ndim == 2 else None)
        if titles is not None:
            ax.set_title(titles[index], fontsize=8)
    return _finish(fig, suptitle)


def feature_map_grid(
    feature_maps: np.ndarray,
    *,
    max_maps: int = 16,
    ncols: int = 8,
    cell_size: float = 1.2,
    cmap: str = "viridis",
    suptitle: str | None = None,
):
    """Draw the first ``max_maps`` channels of one feature map ``[H, W, C]``, each scaled alone."""
    feature_maps = np.asarray(feature_maps)
    if feature_maps.ndim == 4 and feature_maps.shape[0] == 1:
        feature_maps = feature_maps[0]
    if feature_maps.ndim != 3:
        raise ValueError(
            f"feature_maps has shape {feature_maps.shape}: expected [H, W, C] (or [1, H, W, C])"
        )
    count = min(max_maps, feature_maps.shape[-1])
    channels = [feature_maps[..., c] for c in range(count)]
    return image_grid(
        channels,
        [f"ch {c}" for c in range(count)],
        ncols=ncols,
        cell_size=cell_size,
        cmap=cmap,
        suptitle=suptitle,
    )


def filter_grid(
    kernels: np.ndarray,
    *,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    cell_size: float = 1.0,
    suptitle: str | None = None,
):
    """Draw convolution kernels ``[kh, kw, in, out]`` (first input channel) or ``[N, kh, kw]``.

    Each kernel is drawn on a symmetric colour scale (blue negative, red positive), so
    hand-designed and learned filters read the same way.
    """
    kernels = np.asarray(kernels, dtype=np.float32)
    if kernels.ndim == 4:
        kernels = np.moveaxis(kernels[:, :, 0, :], -1, 0)
    if kernels.ndim != 3:
        raise ValueError(
            f"kernels has shape {kernels.shape}: expected [kh, kw, in, out] or [N, kh, kw]"
        )
    fig, axes = _panels(
        len(kernels), ncols, cell_size, titled=titles is not None, suptitle=suptitle
    )
    for index, ax in enumerate(axes):
        limit = float(np.abs(kernels[index]).max()) or 1.0
        ax.imshow(kernels[index], cmap="bwr", vmin=-limit, vmax=limit)
        if titles is not None:
            ax.set_title(titles[index], fontsize=7)
    return _finish(fig, suptitle)


def save_figure(fig, name: str, directory: Path | str | None = None) -> Path:
    """Save ``fig`` as ``<name>.png`` under ``build/figures`` (or ``directory``); return the path."""
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"name={name!r}: expected a plain file name without folders")
    folder = Path(directory) if directory is not None else ROOT / "build" / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, bbox_inches="tight")
    return path


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray | None = None,
    labels: np.ndarray | Sequence[int] | int | None = None,
    *,
    class_names: Sequence[str] | None = None,
    scores: np.ndarray | Sequence[float] | None = None,
    ax=None,
    title: str | None = None,
    linestyle: str = "-",
):
    """Draw one image with its boxes ``[G, 4]`` (xyxy pixels) and labels; return the Axes.

    The image is drawn on ``extent=(0, W, H, 0)`` so box coordinates land on pixel edges
    (the ``utils.boxes`` convention). A label prints as ``class_names[label]`` (its number
    when no names are given); with labels but no boxes, the names become the title.
    Scores, when given, follow the names. Introduced in notebook 02.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    height, width = image.shape[:2]
    ax.imshow(image, extent=(0, width, height, 0), interpolation="nearest")
    labels = None if labels is None else np.atleast_1d(np.asarray(labels))

    def name(label: int) -> str:
        return str(label) if class_names is None else class_names[label]

    colors = plt.get_cmap("tab10").colors
    if boxes is None:
        if labels is not None and title is None:
            title = ", ".join(name(int(label)) for label in labels)
    else:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        for index, box in enumerate(boxes):
            label = None if labels is None else int(labels[index])
            color = colors[0 if label is None else label % len(colors)]
            _outline(ax, box, color, linestyle=linestyle)
            x1, y1 = box[:2]
            text = "" if label is None else name(label)
            if scores is not None:
                text = f"{text} {float(scores[index]):.2f}".strip()
            if text:
                ax.text(
                    x1,
                    y1,
                    text,
                    color="white",
                    fontsize=7,
                    verticalalignment="bottom",
                    bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "edgecolor": "none"},
                )
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def draw_examples(data, count: int = 16, *, ncols: int = 8, cell_size: float = 1.6):
    """Draw the first ``count`` images of a ``utils.shapes.ShapesData`` with their boxes and
    class names; return the Figure. Introduced in notebook 02."""
    count = min(check_count("count", count), len(data))
    figure, axes = _panels(count, ncols, cell_size, titled=False, suptitle=None)
    for index, ax in enumerate(axes):
        boxes = None if data.boxes is None else data.boxes[index]
        draw_boxes(
            data.images[index], boxes, data.labels[index], class_names=data.class_names, ax=ax
        )
    return _finish(figure, None)


def draw_localizations(
    images,
    true_boxes,
    predicted_boxes,
    titles=None,
    *,
    ncols: int = 6,
    cell_size: float = 1.6,
):
    """Images with the ground-truth box (solid) and the predicted box (dashed red), one
    box each; return the Figure. Introduced in notebook 06."""
    count = len(images)
    if not len(true_boxes) == len(predicted_boxes) == count or count == 0:
        raise ValueError(
            f"{count} images, {len(true_boxes)} true and {len(predicted_boxes)} predicted "
            "boxes: expected one of each per image (and at least one image)"
        )
    if titles is not None and len(titles) != count:
        raise ValueError(f"titles has {len(titles)} entries: expected one per image ({count})")
    figure, axes = _panels(count, ncols, cell_size, titled=titles is not None, suptitle=None)
    for index, ax in enumerate(axes):
        draw_boxes(images[index], true_boxes[index], ax=ax)
        _outline(ax, np.asarray(predicted_boxes[index], np.float32), "red", linestyle="--")
        if titles is not None:
            ax.set_title(titles[index], fontsize=7)
    return _finish(figure, None)


def draw_detections(
    images,
    detections,
    class_names: Sequence[str],
    *,
    ground_truths=None,
    min_score: float = 0.5,
    ncols: int = 4,
    cell_size: float = 2.2,
    axes=None,
    suptitle: str | None = None,
):
    """Detections on their images, one panel each; return the Figure.

    ``detections``: one ``(boxes, labels, scores)`` per image (``utils.roi_heads.Detections``
    unpacks so); only those scoring at least ``min_score`` are drawn, with class name and
    score. ``ground_truths`` (one ``(boxes, labels)`` per image), when given, are drawn
    as dashed white boxes, so a missed object shows. ``axes`` draws into existing
    axes (one per image) instead of a new grid. Introduced in notebook 07.
    """
    count = len(images)
    if len(detections) != count or count == 0:
        raise ValueError(
            f"images has {count} entries and detections {len(detections)}: expected one "
            "per image, and at least one"
        )
    if axes is None:
        figure, axes = _panels(count, ncols, cell_size, titled=False, suptitle=suptitle)
    else:
        axes = list(np.ravel(axes))
        figure = axes[0].figure
    for index in range(count):
        ax = axes[index]
        boxes, labels, scores = detections[index]
        keep = np.asarray(scores) >= min_score
        draw_boxes(
            images[index],
            np.asarray(boxes)[keep],
            np.asarray(labels)[keep],
            scores=np.asarray(scores)[keep],
            class_names=class_names,
            ax=ax,
        )
        if ground_truths is not None:
            truth_boxes = ground_truths[index][0]
            for box in np.asarray(truth_boxes, np.float32).reshape(-1, 4):
                _outline(ax, box, "white", linestyle="--", linewidth=1.0)
    return _finish(figure, suptitle)


def plot_pr_curves(result: dict, class_names: Sequence[str], *, cell_size: float = 2.4):
    """Precision-recall curves of ``utils.metrics.mean_average_precision``'s result, one panel
    per class: the raw precision (grey), its monotone envelope, and shaded, the area under
    the envelope that all-point AP integrates (so the shaded area is the AP in the title).
    Return the Figure. Introduced in notebook 07."""
    from utils.metrics import precision_envelope

    figure, axes = plt.subplots(
        1, len(class_names), figsize=(cell_size * len(class_names), cell_size + 0.4), sharey=True
    )
    axes = np.atleast_1d(axes)
    for label, ax in enumerate(axes):
        recall = np.asarray(result["recall"].get(label, []), np.float64)
        precision = np.asarray(result["precision"].get(label, []), np.float64)
        average = result["AP"].get(label, float("nan"))
        if len(recall):
            envelope = precision_envelope(precision)
            # AP sums envelope[i] * (recall[i] - recall[i - 1]): each envelope value covers
            # the recall step that ends at it, which matplotlib calls step "pre".
            steps_recall = np.concatenate([[0.0], recall])
            steps_envelope = np.concatenate([envelope[:1], envelope])
            ax.fill_between(steps_recall, steps_envelope, step="pre", alpha=0.25, label="area = AP")
            ax.plot(recall, precision, color="0.6", linewidth=1, label="precision")
            ax.step(steps_recall, steps_envelope, where="pre", label="envelope")
        ax.set_title(f"{class_names[label]}: AP {average:.2f}")
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("precision")
    axes[0].legend(loc="lower left", fontsize=7)
    figure.tight_layout()
    return figure


# --- notebook 11 ---


def draw_pipelines(
    rows: Sequence[tuple[str, Sequence[str], str]],
    *,
    step_width: float = 1.9,
    step_gap: float = 0.4,
    ax=None,
):
    """Detectors' stages as rows of boxes joined by arrows; return the Figure.

    ``rows``: one ``(name, steps, color)`` per detector, drawn top to bottom, its ``steps``
    (box texts) left to right. A step whose text is empty leaves its place blank (a stage
    a detector does not have), so the stages the rows share stay in one column.
    Introduced in notebook 11.
    """
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if not rows:
        raise ValueError("rows=[]: expected at least one (name, steps, color) row")
    columns = max(len(steps) for _, steps, _ in rows)
    left, pitch = 2.6, step_width + step_gap
    if ax is None:
        _, ax = plt.subplots(figsize=(0.6 * (left + columns * pitch), 0.9 * len(rows) + 0.4))
    for row, (name, steps, color) in enumerate(rows):
        y = len(rows) - row
        ax.text(0, y, name, ha="left", va="center", fontsize=9, fontweight="bold")
        drawn = [index for index, text in enumerate(steps) if text]
        for index in drawn:
            x = left + index * pitch
            box = FancyBboxPatch(
                (x, y - 0.3), step_width, 0.6, boxstyle="round,pad=0.05", facecolor=color,
                edgecolor="0.3",
            )  # fmt: skip
            ax.add_patch(box)
            ax.text(x + step_width / 2, y, steps[index], ha="center", va="center", fontsize=8)
        for start, end in zip(drawn, drawn[1:], strict=False):
            begin = (left + start * pitch + step_width + 0.05, y)
            arrow = FancyArrowPatch(
                begin, (left + end * pitch - 0.05, y), arrowstyle="-|>", mutation_scale=10,
                color="0.3",
            )  # fmt: skip
            ax.add_patch(arrow)
    ax.set_xlim(-0.1, left + columns * pitch)
    ax.set_ylim(0.4, len(rows) + 0.6)
    ax.set_axis_off()
    ax.figure.tight_layout()
    return ax.figure


def draw_anchor_targets(
    image: np.ndarray,
    anchors: np.ndarray,
    anchor_labels: np.ndarray,
    truth_boxes: np.ndarray,
    *,
    ax=None,
    title: str | None = None,
):
    """One image with its anchors' training targets; return the Axes.

    ``anchor_labels`` in ``utils.matching``'s table (``c + 1`` positive for class ``c``, 0
    background, -1 ignored): positive anchors are drawn in their class's colour, ignored
    ones thin and grey, the ground truth ``truth_boxes`` dashed white; background anchors,
    nearly all of them, are not drawn. Introduced in notebook 11.
    """
    anchors = np.asarray(anchors, np.float32).reshape(-1, 4)
    anchor_labels = np.asarray(anchor_labels).reshape(-1)
    if len(anchor_labels) != len(anchors):
        raise ValueError(
            f"anchor_labels has {len(anchor_labels)} entries and anchors {len(anchors)} rows: "
            "expected one label per anchor"
        )
    ax = draw_boxes(image, ax=ax, title=title)
    colors = plt.get_cmap("tab10").colors
    for box in anchors[anchor_labels < 0]:
        _outline(ax, box, "0.6", linewidth=0.5)
    for box, label in zip(
        anchors[anchor_labels > 0], anchor_labels[anchor_labels > 0], strict=True
    ):
        _outline(ax, box, colors[(int(label) - 1) % len(colors)], linewidth=1.0)
    for box in np.asarray(truth_boxes, np.float32).reshape(-1, 4):
        _outline(ax, box, "white", linestyle="--", linewidth=1.2)
    return ax


# --- notebooks 04-05 ---


def plot_seed_accuracies(
    values: dict,
    *,
    chance: float | None = None,
    title: str | None = None,
    xlabel="validation accuracy",
):
    """One row per method, a dot per seed and a bar at the mean: ``values`` maps a method to
    ``{seed: accuracy}``. ``chance``: a dotted reference line. Introduced in notebook 05."""

    if not values:
        raise ValueError("values={}: expected at least one method {name: {seed: value}}")
    names = list(values)
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(names) + 1.0))
    for row, name in enumerate(names):
        points = np.asarray(list(values[name].values()), dtype=float)
        ax.plot(points, np.full(len(points), row), "o", markersize=4, color="C0")
        ax.plot([points.mean()] * 2, [row - 0.3, row + 0.3], color="C1", linewidth=2)
    if chance is not None:
        ax.axvline(chance, color="gray", linestyle=":", linewidth=1, label="commonest class")
        ax.legend(loc="lower right")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel + " (dots: seeds, bar: mean)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig

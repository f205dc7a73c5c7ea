"""Figures the notebooks share: image grids, feature-map grids, filter grids, saving.

Each function returns the matplotlib Figure it drew (introduced in notebook 01).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from utils.course import ROOT


def _grid_shape(count: int, ncols: int) -> tuple[int, int]:
    if count <= 0:
        raise ValueError(f"count={count}: expected at least one image to draw")
    if ncols <= 0:
        raise ValueError(f"ncols={ncols}: expected a positive number of columns")
    ncols = min(ncols, count)
    return math.ceil(count / ncols), ncols


def _subplots(nrows: int, ncols: int, cell_size: float, *, titled: bool, suptitle: str | None):
    # Each row gets room for its titles and a gap, so square images never touch.
    row_height = cell_size + (0.35 if titled else 0.15)
    height = row_height * nrows + (0.35 if suptitle else 0.0)
    return plt.subplots(nrows, ncols, figsize=(cell_size * ncols, height), squeeze=False)


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
    nrows, ncols = _grid_shape(len(images), ncols)
    fig, axes = _subplots(nrows, ncols, cell_size, titled=titles is not None, suptitle=suptitle)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= len(images):
            continue
        image = np.asarray(images[index])
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        ax.imshow(image, cmap=cmap if image.ndim == 2 else None)
        if titles is not None:
            ax.set_title(titles[index], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


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
    nrows, ncols = _grid_shape(len(kernels), ncols)
    fig, axes = _subplots(nrows, ncols, cell_size, titled=titles is not None, suptitle=suptitle)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= len(kernels):
            continue
        limit = float(np.abs(kernels[index]).max()) or 1.0
        ax.imshow(kernels[index], cmap="bwr", vmin=-limit, vmax=limit)
        if titles is not None:
            ax.set_title(titles[index], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def save_figure(fig, name: str, directory: Path | str | None = None) -> Path:
    """Save ``fig`` as ``<name>.png`` under ``build/figures`` (or ``directory``); return the path."""
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"name={name!r}: expected a plain file name without folders")
    folder = Path(directory) if directory is not None else ROOT / "build" / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, bbox_inches="tight")
    return path

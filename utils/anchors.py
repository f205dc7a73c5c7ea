"""Anchor boxes for region proposal networks.

Introduced in notebook 09.
"""

import numpy as np

from utils.checks import check_count, check_positive, fail


def generate_anchors(feature_height, feature_width, stride, sizes, ratios):
    """Anchors for every cell of a feature map: ``[H * W * len(ratios) * len(sizes), 4]``.

    Faster R-CNN's anchors: ratio ``r`` is height / width, so an anchor of ``size`` has
    ``w = size / sqrt(r)`` and ``h = size * sqrt(r)`` (area ``size**2``), centred on the
    cell centre ``((j + 0.5) * stride, (i + 0.5) * stride)``. Boxes are float32
    ``(x1, y1, x2, y2)`` in input pixels, ordered by row ``i``, column ``j``, then anchor
    (fastest), so an NHWC head output ``[H, W, A * 4]`` reshapes to ``[H * W * A, 4]``.
    Within a cell the anchor index is ``ratio_index * len(sizes) + size_index`` (ratios
    outer, as torchvision's AnchorGenerator and py-faster-rcnn order them).
    The paper uses sizes (128, 256, 512), ratios (0.5, 1, 2) at stride 16.

    Introduced in notebook 09.
    """
    check_count("feature_height", feature_height)
    check_count("feature_width", feature_width)
    check_positive("stride", stride)
    for name, values in (("sizes", sizes), ("ratios", ratios)):
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1 or array.size == 0 or not np.all(array > 0):
            fail(name, values, "a non-empty sequence of positive numbers")
    sizes = np.asarray(sizes, dtype=np.float64)
    ratios = np.asarray(ratios, dtype=np.float64)
    half_widths = (sizes[None, :] / np.sqrt(ratios[:, None])).ravel() / 2
    half_heights = (sizes[None, :] * np.sqrt(ratios[:, None])).ravel() / 2
    centre_x = (np.arange(feature_width) + 0.5) * stride
    centre_y = (np.arange(feature_height) + 0.5) * stride
    cy, cx = np.meshgrid(centre_y, centre_x, indexing="ij")
    cx, cy = cx[:, :, None], cy[:, :, None]
    anchors = np.stack(
        [cx - half_widths, cy - half_heights, cx + half_widths, cy + half_heights], axis=-1
    )
    return anchors.reshape(-1, 4).astype(np.float32)

"""Keras layers that pool a region of a feature map: RoI max pooling, RoIAlign and SPP.

The file reads top to bottom: first RoI pooling itself, as plain NumPy a learner can
follow against the lecture's "split the region into bins and max-pool each"
(``roi_pool_bins``, ``roi_pool_reference``); then the Keras layers. ``RoIPooling``
computes exactly the reference's numbers, but with a fast kernel that is explained (and
kept) in ``utils/_roi_kernels.py``.

The RoI layers follow torchvision.ops (``roi_pool``, ``roi_align``): they are called as
``layer(features, rois)`` with ``features`` ``[B, H, W, C]`` (channels last) and ``rois``
``[R, 5]`` rows of ``(batch_index, x1, y1, x2, y2)`` in input-image pixels, and return
``[R, PH, PW, C]``. Any number of RoIs works (zero gives ``[0, PH, PW, C]``), eagerly,
inside ``tf.function`` and under ``jit_compile=True``; the feature map's height and
width must be known when the layer is traced.

Batch indices are checked whenever their values are known (eagerly, or constants in a
graph): a ``ValueError`` names the bad row. Inside a graph they are usually unknown
when the layer is traced, so an out-of-range index is clipped to ``[0, B - 1]`` instead.

Introduced in notebook 08.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from utils import _roi_kernels, checks

# ---- 1. RoI pooling, the reference -------------------------------------------------------
#
# torchvision's roi_pool (Fast R-CNN's layer), in four steps:
#   1. the box's corners times spatial_scale, rounded half away from zero (C's round),
#      give the RoI's first and last cell on the map, both included (hence the +1);
#   2. the RoI, at least one cell, is split into PH x PW bins of roi_size / pooled cells;
#      bin i spans [floor(i * bin), ceil((i + 1) * bin)), clipped to the map, so
#      neighbouring bins may share a cell;
#   3. each bin's output is the max over its cells, per channel;
#   4. an empty bin (the RoI off the map, or a degenerate box) gives 0.
# The gradient of an output goes to the cell that held its max (the first one in
# row-major order when several tie) and adds up over bins and RoIs.


def _round_half_away_from_zero(x):
    """C's ``round``, which Fast R-CNN and torchvision use; ``ops.round`` rounds to even."""
    return ops.sign(x) * ops.floor(ops.abs(x) + 0.5)


def _float32_quotient(length, pooled):
    """float32 ``length / pooled``, bit for bit, in eager, graph and XLA mode alike.

    Graph mode and XLA rewrite a division by a constant as a multiplication by its
    reciprocal, which is not always the same float32 and so moves bin edges: a RoI 3
    cells long in 7 bins has bin size 3 / 7 = 0.42857143 but 3 * (1 / 7) = 0.42857146,
    and the last bin's end ``ceil(7 * bin)`` becomes 4 instead of 3. Dividing in float64
    and rounding to float32 gives the correctly rounded quotient either way.
    """
    return ops.cast(ops.cast(length, "float64") / np.float64(pooled), "float32")


def _bin_edges(rois, spatial_scale, pool_size, feature_size):
    """Steps 1 and 2 for RoI rows ``[R, 5]``: ``(row_start, row_end, col_start, col_end)``.

    Integer edges, ``[R, PH]`` for rows and ``[R, PW]`` for columns, each bin
    ``[start, end)``, clipped to ``feature_size`` ``(H, W)``. float32 arithmetic, as in
    torchvision's kernel. The one place the bin rule is written.
    """
    corners = _round_half_away_from_zero(
        ops.cast(rois, "float32")[:, 1:] * np.float32(spatial_scale)
    )
    edges = []
    for axis, pooled, size in (
        (1, pool_size[0], feature_size[0]),
        (0, pool_size[1], feature_size[1]),
    ):
        first, last = corners[:, axis], corners[:, axis + 2]
        bin_size = _float32_quotient(ops.maximum(last - first + 1.0, 1.0), pooled)
        index = ops.arange(pooled, dtype="float32")
        start = ops.floor(index[None, :] * bin_size[:, None]) + first[:, None]
        end = ops.ceil((index[None, :] + 1.0) * bin_size[:, None]) + first[:, None]
        edges += [ops.cast(ops.clip(edge, 0, size), "int32") for edge in (start, end)]
    return tuple(edges)


def roi_pool_bins(
    box, spatial_scale: float, pool_size: int | tuple[int, int], feature_size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """The feature-map cells each of ``RoIPooling``'s bins takes its max over, for one box.

    ``box`` ``(x1, y1, x2, y2)`` in image pixels, ``feature_size`` ``(H, W)``. The rule of
    ``utils.layers.RoIPooling`` (torchvision ``roi_pool``): corners times
    ``spatial_scale`` rounded half away from zero, inclusive end, bin ``i`` spans
    ``[floor(i * bin), ceil((i + 1) * bin))`` cells, clipped to the map. Returns int
    arrays ``"rows"`` ``[PH, 2]`` and ``"columns"`` ``[PW, 2]`` of ``[start, end)`` cell
    ranges, and ``"projected"``, the box on the map before rounding (float ``[4]``), so a
    notebook can draw both. NumPy, for drawing and checking. Introduced in notebook 08.
    """
    pool_size = checks.check_pair("pool_size", pool_size)
    box = np.asarray(box, np.float32).reshape(4)
    rows = np.concatenate([[0.0], box]).astype(np.float32)[None]
    edges = [
        np.asarray(edge)[0].astype(np.int64)
        for edge in _bin_edges(rows, spatial_scale, pool_size, feature_size)
    ]
    return {
        "rows": np.stack(edges[:2], axis=1),
        "columns": np.stack(edges[2:], axis=1),
        "projected": box * np.float32(spatial_scale),
    }


def roi_pool_reference(features, rois, pool_size, spatial_scale=1.0) -> np.ndarray:
    """RoI max pooling as a plain loop over RoIs and bins (NumPy): ``[R, PH, PW, C]``.

    What ``RoIPooling`` computes, written to be read, not run on large inputs:
    ``features`` ``[B, H, W, C]``, ``rois`` ``[R, 5]`` rows ``(batch_index, x1, y1, x2, y2)``.
    Introduced in notebook 08.
    """
    features = np.asarray(features, np.float32)
    rois = np.asarray(rois, np.float32).reshape(-1, 5)
    pool_height, pool_width = checks.check_pair("pool_size", pool_size)
    output = np.zeros((len(rois), pool_height, pool_width, features.shape[-1]), np.float32)
    for r, (batch_index, *box) in enumerate(rois):
        bins = roi_pool_bins(box, spatial_scale, (pool_height, pool_width), features.shape[1:3])
        for i, (top, bottom) in enumerate(bins["rows"]):
            for j, (left, right) in enumerate(bins["columns"]):
                if bottom > top and right > left:  # an empty bin stays 0
                    cells = features[int(batch_index), top:bottom, left:right]
                    output[r, i, j] = cells.max(axis=(0, 1))
    return output


# ---- 2. The fast kernel (utils/_roi_kernels.py) ------------------------------------------
#
# roi_pool_reference loops over R x PH x PW bins in Python: fine to read, far too slow to
# train with. RoIPooling computes the same numbers with a handful of tensor ops:
#   * a "sparse table": for window sizes 1, 2, 4, ... along each axis, the max over every
#     window of the map, each level the max of two shifted copies of the one before;
#   * a bin L cells long (2**k <= L < 2**(k+1)) is exactly covered by two windows of 2**k
#     cells, one at its start and one at its end, so each bin is the max of four look-ups
#     (two per axis), whatever its size (under XLA, which makes look-ups cheap and tables
#     dear, windows of 1, 4, 16, ... cells and three look-ups per axis);
#   * the table holds int64 keys, value bits above and the element's position below, so
#     one integer max finds both the maximum and (on ties) the first cell in row-major
#     order, and the gradient is added straight into that element.
# max_pool_bins in utils/_roi_kernels.py holds the code and the details.

# ---- 3. The layers ---------------------------------------------------------------------------


class _RoILayer(keras.layers.Layer):
    """What the RoI layers share: ``spatial_scale``, float32 RoIs, the checks of the inputs.

    Subclasses list their constructor arguments in ``_config_names`` (for ``get_config``)
    and call ``self._inputs(features, rois)`` first in ``call``.
    """

    _config_names = ("pool_size", "spatial_scale")

    def __init__(self, spatial_scale=1.0, **kwargs):
        # RoIs are pixel coordinates: mixed precision must not round them to float16.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.spatial_scale = checks.check_positive("spatial_scale", spatial_scale)

    def build(self, features_shape, rois_shape=None):
        self.built = True

    def _inputs(self, features, rois):
        """Checks; returns ``((H, W, C), rois as float32, batch index [R] as int32)``."""
        name = type(self).__name__
        shape = tuple(features.shape)
        if len(shape) != 4:
            raise ValueError(
                f"{name}: features has shape {shape}: expected rank 4 [batch, height, width, channels]"
            )
        if None in shape[1:]:
            raise ValueError(
                f"{name}: features has shape {shape}: expected a known height, width and "
                "channel count when the layer is traced"
            )
        if min(shape[1:3]) < 1:
            raise ValueError(f"{name}: features has shape {shape}: expected a non-empty map")
        if rois is None:
            return shape[1:], None, None
        if len(rois.shape) != 2 or rois.shape[1] != 5:
            raise ValueError(
                f"{name}: rois has shape {tuple(rois.shape)}: expected [R, 5] rows "
                "(batch_index, x1, y1, x2, y2)"
            )
        values = tf.get_static_value(rois)
        if values is not None:
            batch_index, limit = values[:, 0], shape[0] or np.inf
            bad = np.flatnonzero(
                (batch_index != np.floor(batch_index)) | (batch_index < 0) | (batch_index >= limit)
            )
            if bad.size:
                checks.fail(
                    f"{name}: rois[{bad[0]}, 0]",
                    float(batch_index[bad[0]]),
                    f"an integer batch index in [0, {shape[0] or 'B'})",
                )
        rois = ops.cast(rois, "float32")
        batch_index = ops.clip(ops.cast(rois[:, 0], "int32"), 0, ops.shape(features)[0] - 1)
        return shape[1:], rois, batch_index

    def compute_output_shape(self, features_shape, rois_shape):
        return (rois_shape[0], *self.pool_size, features_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in self._config_names})
        return config


@keras.saving.register_keras_serializable(package="course")
class RoIPooling(_RoILayer):
    """RoI max pooling: each RoI's window split into ``PH x PW`` bins, max in each bin.

    Follows Fast R-CNN's layer and torchvision.ops.roi_pool exactly (the rule at the top
    of this file; ``roi_pool_reference`` is the same thing as a loop): corners scaled by
    ``spatial_scale`` and rounded half away from zero, inclusive end (``+1``), bins
    ``[floor(i * bin), ceil((i + 1) * bin))`` clipped to the map, so bins may overlap,
    and empty bins (RoIs partly or wholly off the map, degenerate boxes) give 0.
    The gradient goes to each bin's argmax (the first in row-major order on ties).
    The work is done by ``utils._roi_kernels.max_pool_bins`` (a sparse table of window
    maxima, no Python loop).

    Call: ``layer(features [B, H, W, C], rois [R, 5]) -> [R, PH, PW, C]``.

    Introduced in notebook 08.
    """

    def __init__(self, pool_size, spatial_scale=1.0, **kwargs):
        super().__init__(spatial_scale, **kwargs)
        self.pool_size = checks.check_pair("pool_size", pool_size)

    def call(self, features, rois):
        (height, width, _), rois, batch_index = self._inputs(features, rois)
        edges = _bin_edges(rois, self.spatial_scale, self.pool_size, (height, width))
        longest = [
            _roi_kernels.longest_bin(size, pooled)
            for size, pooled in zip((height, width), self.pool_size, strict=True)
        ]
        return _roi_kernels.max_pool_bins(features, batch_index, *edges, longest)


def _bilinear_axis(coordinate, size):
    """torchvision's per-axis bilinear rule: ``(low, high, weight_low, weight_high)``.

    Points beyond ``[-1, size]`` get zero weights; points in ``[-1, 0]`` read index 0
    and points past ``size - 1`` read the last index, as in torchvision.ops.roi_align.
    """
    inside = ops.cast((coordinate >= -1.0) & (coordinate <= size), coordinate.dtype)
    coordinate = ops.maximum(coordinate, 0.0)
    low = ops.cast(ops.floor(coordinate), "int32")
    at_edge = low >= size - 1
    low = ops.where(at_edge, size - 1, low)
    high = ops.where(at_edge, size - 1, low + 1)
    fraction = ops.where(at_edge, 0.0, coordinate - ops.cast(low, coordinate.dtype))
    return low, high, (1.0 - fraction) * inside, fraction * inside


@keras.saving.register_keras_serializable(package="course")
class RoIAlign(_RoILayer):
    """RoIAlign: average of bilinear samples in each of ``PH x PW`` bins, no rounding.

    Follows torchvision.ops.roi_align: start ``x1 * spatial_scale - 0.5`` when
    ``aligned`` (else no offset and RoI sizes clamped to at least 1), ``sampling_ratio``
    samples per bin axis (adaptive ``ceil(roi_size / pool)`` per RoI when ``<= 0``),
    points beyond ``[-1, H]`` count as 0. Degenerate RoIs (x2 < x1) behave as there:
    sized 1 when not aligned, sampled backwards when aligned with a fixed
    ``sampling_ratio``, and 0 when aligned and adaptive. The gradient spreads each
    output over the bilinear weights of its samples.

    Call: ``layer(features [B, H, W, C], rois [R, 5]) -> [R, PH, PW, C]``.

    Introduced in notebook 08.
    """

    _config_names = ("pool_size", "spatial_scale", "sampling_ratio", "aligned")

    def __init__(self, pool_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False, **kwargs):
        super().__init__(spatial_scale, **kwargs)
        self.pool_size = checks.check_pair("pool_size", pool_size)
        if not isinstance(sampling_ratio, int | np.integer) or isinstance(sampling_ratio, bool):
            checks.fail("sampling_ratio", sampling_ratio, "an integer (<= 0 for adaptive)")
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def _sample_grid(self, rois, pooled, axis):
        """Per-RoI ``(start, bin_size, samples)`` along one axis (axis 0: x, 1: y)."""
        offset = 0.5 if self.aligned else 0.0
        scaled = rois[:, 1:] * np.float32(self.spatial_scale)
        start = scaled[:, axis] - offset
        length = (scaled[:, axis + 2] - offset) - start
        if not self.aligned:
            length = ops.maximum(length, 1.0)
        bin_size = _float32_quotient(length, pooled)
        if self.sampling_ratio > 0:
            samples = ops.full(ops.shape(start), self.sampling_ratio, dtype="int32")
        else:
            samples = ops.cast(ops.ceil(bin_size), "int32")
        return start, bin_size, samples

    def call(self, features, rois):
        (height, width, channels), rois, batch_index = self._inputs(features, rois)
        pool_height, pool_width = self.pool_size
        y_start, y_bin, y_samples = self._sample_grid(rois, pool_height, 1)
        x_start, x_bin, x_samples = self._sample_grid(rois, pool_width, 0)
        count = ops.cast(ops.maximum(y_samples * x_samples, 1), "float32")
        samples_down = ops.max(y_samples, initial=1)
        samples_across = ops.max(x_samples, initial=1)
        bins_down = ops.arange(pool_height, dtype="float32")
        bins_across = ops.arange(pool_width, dtype="float32")

        def axis_points(start, bin_size, samples, bins, number, size):
            """Bilinear corners ``[R, P]`` of sample ``number`` in every bin along an axis."""
            offset = (
                (ops.cast(number, "float32") + 0.5)
                * bin_size
                / ops.cast(ops.maximum(samples, 1), "float32")
            )
            coordinate = start[:, None] + bins[None, :] * bin_size[:, None] + offset[:, None]
            low, high, weight_low, weight_high = _bilinear_axis(coordinate, size)
            used = ops.cast(number < samples, "float32")[:, None]
            return (low, high), (weight_low * used, weight_high * used)

        def corners(number):
            """Row indices into ``[B*H*W, C]`` and weights ``[R, PH, PW]`` of one sample."""
            down, across = number // samples_across, number % samples_across
            rows, row_weights = axis_points(y_start, y_bin, y_samples, bins_down, down, height)
            cols, col_weights = axis_points(x_start, x_bin, x_samples, bins_across, across, width)
            image_row = batch_index[:, None] * height
            for row, row_weight in zip(rows, row_weights, strict=True):
                for col, col_weight in zip(cols, col_weights, strict=True):
                    index = (image_row + row)[:, :, None] * width + col[:, None, :]
                    yield index, row_weight[:, :, None] * col_weight[:, None, :]

        total = samples_down * samples_across

        @ops.custom_gradient
        def align(features):
            table = ops.cast(ops.reshape(features, (-1, channels)), "float32")

            def add_sample(number, pooled):
                for index, weight in corners(number):
                    pooled = pooled + ops.take(table, index, axis=0) * weight[..., None]
                return number + 1, pooled

            initial = ops.zeros((ops.shape(rois)[0], pool_height, pool_width, channels))
            _, pooled = ops.while_loop(lambda number, _: number < total, add_sample, (0, initial))

            def gradient(upstream):
                upstream = ops.cast(upstream, "float32") / count[:, None, None, None]
                per_sample = ops.reshape(upstream, (-1, channels))

                def scatter_sample(number, gradient_table):
                    for index, weight in corners(number):
                        gradient_table = gradient_table + ops.segment_sum(
                            per_sample * ops.reshape(weight, (-1, 1)),
                            ops.reshape(index, (-1,)),
                            num_segments=ops.shape(table)[0],
                        )
                    return number + 1, gradient_table

                _, gradient_table = ops.while_loop(
                    lambda number, _: number < total,
                    scatter_sample,
                    (0, ops.zeros_like(table)),
                )
                return ops.cast(ops.reshape(gradient_table, ops.shape(features)), features.dtype)

            return ops.cast(pooled / count[:, None, None, None], features.dtype), gradient

        return align(features)


def spatial_pyramid_bins(size, level):
    """Bin edges ``(starts, ends)`` splitting an axis of ``size`` into ``level`` bins.

    SPP-net's bins: bin ``i`` is ``[floor(i * size / level), ceil((i + 1) * size / level))``,
    so the bins cover the axis, each is non-empty when ``size >= level``, and there are
    always exactly ``level`` of them (the paper's ``win = ceil, stride = floor`` rule is not).

    Introduced in notebook 08.
    """
    index = np.arange(level)
    return (index * size) // level, -((-(index + 1) * size) // level)


@keras.saving.register_keras_serializable(package="course")
class SpatialPyramidPooling(_RoILayer):
    """Spatial pyramid pooling: max pooling into ``n x n`` bins for each ``n`` in ``levels``.

    SPP-net's fixed-length representation. Level ``n`` splits each axis with
    ``spatial_pyramid_bins``; levels (4, 2, 1) give 16 + 4 + 1 = 21 bins per channel.
    Output layout: the levels in the order given, each level's ``[n, n, C]`` max map
    flattened row-major (bin row, bin column, channel), concatenated. Gradients go to
    each bin's argmax, as in ``RoIPooling``.

    Call: ``layer(features [B, H, W, C]) -> [B, sum(n * n) * C]`` pools whole maps, and
    ``layer(features, rois [R, 5]) -> [R, sum(n * n) * C]`` pools each RoI's window
    with ``RoIPooling``'s bins (pool size ``n``, ``spatial_scale``), like SPP-net's detector.

    Introduced in notebook 08.
    """

    _config_names = ("levels", "spatial_scale")

    def __init__(self, levels=(4, 2, 1), spatial_scale=1.0, **kwargs):
        super().__init__(spatial_scale, **kwargs)
        levels = tuple(levels) if isinstance(levels, list | tuple) else levels
        if not (
            isinstance(levels, tuple)
            and levels
            and all(
                isinstance(n, int | np.integer) and not isinstance(n, bool) and n > 0
                for n in levels
            )
        ):
            checks.fail("levels", levels, "a non-empty list or tuple of integers >= 1")
        self.levels = tuple(int(n) for n in levels)

    def call(self, features, rois=None):
        (height, width, channels), rois, batch_index = self._inputs(features, rois)
        if rois is None:  # whole maps: one "RoI" per image, SPP-net's bins
            batch_size = ops.shape(features)[0]
            batch_index = ops.arange(batch_size, dtype="int32")
        pooled = []
        for level in self.levels:
            if rois is None:
                edges = [
                    ops.broadcast_to(
                        ops.convert_to_tensor(edge.astype("int32")), (batch_size, level)
                    )
                    for size in (height, width)
                    for edge in spatial_pyramid_bins(size, level)
                ]
            else:
                edges = _bin_edges(rois, self.spatial_scale, (level, level), (height, width))
            longest = [_roi_kernels.longest_bin(size, level) for size in (height, width)]
            level_max = _roi_kernels.max_pool_bins(features, batch_index, *edges, longest)
            pooled.append(ops.reshape(level_max, (-1, level * level * channels)))
        return ops.concatenate(pooled, axis=1)

    def compute_output_shape(self, features_shape, rois_shape=None):
        rows = features_shape[0] if rois_shape is None else rois_shape[0]
        return (rows, sum(n * n for n in self.levels) * features_shape[-1])


# ---- 4. RoI formats ----------------------------------------------------------------------------


def boxes_to_rois(boxes):
    """Per-image boxes ``[B, S, 4]`` to RoI rows ``[B * S, 5]`` of ``(batch_index, x1, y1, x2, y2)``.

    The layout the RoI layers take (torchvision's ``convert_boxes_to_roi_format``), with
    ``keras.ops``. Introduced in notebook 08.
    """
    boxes = ops.cast(boxes, "float32")
    batch, count = ops.shape(boxes)[0], ops.shape(boxes)[1]
    index = ops.cast(ops.arange(batch), "float32")
    index = ops.broadcast_to(index[:, None, None], (batch, count, 1))
    return ops.reshape(ops.concatenate([index, boxes], axis=-1), (-1, 5))


def image_rois(boxes) -> np.ndarray:
    """One image's boxes ``[P, 4]`` as RoI rows ``[P, 5]`` with batch index 0 (NumPy).

    Introduced in notebook 08.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.concatenate([np.zeros((len(boxes), 1), np.float32), boxes], axis=1)

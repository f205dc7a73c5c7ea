"""Keras layers that pool a region of a feature map: RoI max pooling, RoIAlign and SPP.

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

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops


def _positive_pair(value, name):
    """``value`` as a pair of positive ints; a single int is used for both axes."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(
        isinstance(item, (int, np.integer)) and not isinstance(item, bool) and item > 0
        for item in pair
    ):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _positive_scale(value):
    if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
        raise ValueError(f"spatial_scale must be a positive finite number, got {value!r}")
    return float(value)


def _check_features(features, layer_name):
    """Static checks on ``features``; returns ``(height, width, channels)``."""
    shape = tuple(features.shape)
    if len(shape) != 4:
        raise ValueError(
            f"{layer_name}: features must have rank 4 [batch, height, width, channels], "
            f"got shape {shape}"
        )
    height, width, channels = shape[1:]
    if height is None or width is None or channels is None:
        raise ValueError(
            f"{layer_name}: features must have a known height, width and channel count "
            f"when the layer is traced, got shape {shape}"
        )
    if height < 1 or width < 1:
        raise ValueError(f"{layer_name}: features must not be empty, got shape {shape}")
    return height, width, channels


def _check_rois(rois, features, layer_name):
    """Static checks on ``rois``, plus a check of the batch indices when their values are known."""
    shape = tuple(rois.shape)
    if len(shape) != 2 or shape[1] != 5:
        raise ValueError(
            f"{layer_name}: rois must have shape [R, 5] with rows "
            f"(batch_index, x1, y1, x2, y2), got shape {shape}"
        )
    values = tf.get_static_value(rois)
    if values is None:
        return
    batch_index = values[:, 0]
    batch_size = features.shape[0]
    limit = np.inf if batch_size is None else batch_size
    bad = np.flatnonzero(
        (batch_index != np.floor(batch_index)) | (batch_index < 0) | (batch_index >= limit)
    )
    if bad.size:
        raise ValueError(
            f"{layer_name}: rois[:, 0] must hold integer batch indices in "
            f"[0, {batch_size or 'B'}), got {batch_index[bad[0]]} in row {bad[0]}"
        )


def _batch_index(rois, features):
    """Column 0 of ``rois`` as int32, clipped into range (only matters in graph mode)."""
    batch_size = ops.shape(features)[0]
    return ops.clip(ops.cast(rois[:, 0], "int32"), 0, batch_size - 1)


def _round_half_away_from_zero(x):
    """C's ``round``, which Fast R-CNN and torchvision use; ``ops.round`` rounds to even."""
    return ops.sign(x) * ops.floor(ops.abs(x) + 0.5)


def _roi_pool_bins(rois, spatial_scale, pooled, size, axis):
    """Integer bin edges ``[R, pooled]`` along one axis (axis 0: x, 1: y), torchvision roi_pool."""
    scaled = rois[:, 1:] * np.float32(spatial_scale)
    start = _round_half_away_from_zero(scaled[:, axis])
    end = _round_half_away_from_zero(scaled[:, axis + 2])
    bin_size = ops.maximum(end - start + 1.0, 1.0) / np.float32(pooled)
    index = ops.arange(pooled, dtype="float32")
    low = ops.floor(index[None, :] * bin_size[:, None]) + start[:, None]
    high = ops.ceil((index[None, :] + 1.0) * bin_size[:, None]) + start[:, None]
    return ops.cast(ops.clip(low, 0, size), "int32"), ops.cast(ops.clip(high, 0, size), "int32")


def _table_depth(size, pooled):
    """How many power-of-two window levels to precompute along an axis of ``size``.

    Enough for every bin of a RoI inside the map (at most ``ceil((size + 1) / pooled) + 1``
    long) to be covered by two windows; longer bins take more windows, not more levels.
    """
    longest_bin = min(size, math.ceil((size + 1) / pooled) + 1)
    return int(math.floor(math.log2(longest_bin)))


_LOW_BITS = np.int64(2**32 - 1)
_EMPTY = np.int64(2**63 - 1)


def _max_keys(features):
    """int64 keys ordered by value, then by earlier row-major position: ``[B, H, W, C]``.

    The high 32 bits are the float32 value's bits made order-preserving (negative floats
    have their magnitude bits flipped; ``+ 0.0`` turns -0 into 0 so the two tie), the low
    32 bits are ``2**32 - 1`` minus the element's flat index (features of up to ``2**32``
    elements). One integer max then finds the maximum and, among equal maxima, the first
    in row-major order, as torchvision's scan does.
    """
    bits = ops.view(ops.cast(features, "float32") + 0.0, "int32")
    ordered = ops.where(bits < 0, ops.bitwise_xor(bits, np.int32(2**31 - 1)), bits)
    flat_index = ops.reshape(ops.arange(ops.size(features), dtype="int64"), ops.shape(features))
    return ops.left_shift(ops.cast(ordered, "int64"), np.int64(32)) + (_LOW_BITS - flat_index)


def _window_max_table(keys, depth_h, depth_w):
    """Sparse table of window maxima of ``keys [B, H, W, C]``, levels concatenated.

    Level ``(kh, kw)`` is laid out like the map flattened to rows of ``C``: row
    ``(b * H + h) * W + w`` holds the max key over the ``2**kh x 2**kw`` window with
    top-left corner ``(h, w)``. Each level is the max of two shifted copies of the one
    before, shifted along the flattened rows (contiguous slices, no copies in graph
    mode), so rows whose window would leave the image hold junk and are never read.
    Returns ``(table [sum of level lengths, C], offsets)``: level ``k`` starts at row
    ``k * B * H * W - offsets[k]``.
    """
    _, height, width, channels = keys.shape
    rows = ops.reshape(keys, (-1, channels))
    levels, offsets, dropped = [], [], 0
    for kh in range(depth_h + 1):
        if kh:
            shift = 2 ** (kh - 1) * width
            rows = ops.maximum(rows[:-shift], rows[shift:])
        level, level_dropped = rows, (2**kh - 1) * width
        for kw in range(depth_w + 1):
            if kw:
                shift = 2 ** (kw - 1)
                level = ops.maximum(level[:-shift], level[shift:])
                level_dropped += shift
            levels.append(level)
            offsets.append(dropped)
            dropped += level_dropped
    return ops.concatenate(levels, axis=0), np.array(offsets, "int32")


def _window_level(length, depth):
    """Per-bin level ``min(floor(log2(length)), depth)`` for integer ``length >= 1``."""
    level = ops.zeros_like(length)
    for k in range(1, depth + 1):
        level = level + ops.cast(length >= 2**k, "int32")
    return level


def _max_pool_bins(features, batch_index, row_start, row_end, col_start, col_end, depths):
    """Exact max over integer bins ``[row_start, row_end) x [col_start, col_end)``.

    ``batch_index`` is ``[R]``, row edges ``[R, PH]``, column edges ``[R, PW]``; returns
    ``[R, PH, PW, C]``, 0 for empty bins. Each bin is the max of a few windows looked up
    in a sparse table of window maxima (two per axis when the bin is at most twice the
    largest tabled window, more only for longer bins), so the cost does not grow with
    the bin area and nothing of size ``[R, H, W, C]`` is built. The table holds keys
    that carry each maximum's position too, so the gradient reaches exactly one input
    per output (the first maximum in row-major order, as torchvision's scan) and adds
    up over bins and RoIs.
    """
    batch_size = ops.shape(features)[0]
    _, height, width, _ = features.shape
    depth_h, depth_w = depths
    table, dropped_rows = _window_max_table(
        _max_keys(ops.stop_gradient(features)), depth_h, depth_w
    )

    empty_bin = (row_end <= row_start)[:, :, None] | (col_end <= col_start)[:, None, :]
    row_start = ops.minimum(row_start, height - 1)
    col_start = ops.minimum(col_start, width - 1)
    row_length = ops.maximum(row_end - row_start, 1)
    col_length = ops.maximum(col_end - col_start, 1)
    row_level = _window_level(row_length, depth_h)
    col_level = _window_level(col_length, depth_w)
    row_window = ops.left_shift(1, row_level)
    col_window = ops.left_shift(1, col_level)
    # Window j of a bin starts at min(start + j * window, end - window): two windows
    # (start- and end-aligned) cover any bin up to twice the window long; longer bins
    # (RoIs much larger than the map) take ceil(length / window).
    windows_down = ops.max((row_length + row_window - 1) // row_window, initial=2)
    windows_across = ops.max((col_length + col_window - 1) // col_window, initial=2)

    level = row_level[:, :, None] * (depth_w + 1) + col_level[:, None, :]
    level_start = level * (batch_size * height * width) - ops.take(dropped_rows, level)
    image_row = batch_index[:, None] * height

    def window(down, across):
        """Max key of window ``(down, across)`` of every bin, ``[R, PH, PW, C]``."""
        top = ops.minimum(row_start + down * row_window, row_start + row_length - row_window)
        left = ops.minimum(col_start + across * col_window, col_start + col_length - col_window)
        index = level_start + ((image_row + top) * width)[:, :, None] + left[:, None, :]
        return ops.take(table, index, axis=0)

    # Empty bins start at the largest key, so no window replaces it and it marks them.
    best = ops.where(empty_bin[..., None], _EMPTY, window(0, 0))
    for down, across in ((0, 1), (1, 0), (1, 1)):
        best = ops.maximum(best, window(down, across))
    # The windows beyond the first two per axis: rows 2.. (all columns), then columns
    # 2.. of rows 0 and 1. The loop runs zero times unless a bin is that long.
    below = (windows_down - 2) * windows_across
    beside = ops.maximum(windows_across - 2, 1)

    def add_window(number, best):
        in_rows_below = number < below
        down = ops.where(in_rows_below, 2 + number // windows_across, (number - below) // beside)
        across = ops.where(in_rows_below, number % windows_across, 2 + (number - below) % beside)
        return number + 1, ops.maximum(best, window(down, across))

    extra = below + 2 * (windows_across - 2)
    _, best = ops.while_loop(lambda number, _: number < extra, add_window, (0, best))

    # The maxima are read back from the keys; the gradient goes to their positions.
    empty = best == _EMPTY
    ordered = ops.cast(ops.right_shift(best, np.int64(32)), "int32")
    bits = ops.where(ordered < 0, ops.bitwise_xor(ordered, np.int32(2**31 - 1)), ordered)
    maximum = ops.where(empty, 0.0, ops.view(bits, "float32"))
    flat_index = ops.reshape(_LOW_BITS - ops.bitwise_and(best, _LOW_BITS), (-1,))

    @ops.custom_gradient
    def route_to_argmax(features):
        def gradient(upstream):
            upstream = ops.reshape(ops.where(empty, 0.0, upstream), (-1,))
            routed = ops.segment_sum(upstream, flat_index, num_segments=ops.size(features))
            return ops.reshape(routed, ops.shape(features))

        return ops.cast(maximum, features.dtype), gradient

    return route_to_argmax(features)


@keras.saving.register_keras_serializable(package="course")
class RoIPooling(keras.layers.Layer):
    """RoI max pooling: each RoI's window split into ``PH x PW`` bins, max in each bin.

    Follows Fast R-CNN's layer and torchvision.ops.roi_pool exactly: corners scaled by
    ``spatial_scale`` and rounded half away from zero, inclusive end (``+1``), bins
    ``[floor(i * bin), ceil((i + 1) * bin))`` clipped to the map, so bins may overlap,
    and empty bins (RoIs partly or wholly off the map, degenerate boxes) give 0.
    The gradient goes to each bin's argmax (the first in row-major order on ties).

    Call: ``layer(features [B, H, W, C], rois [R, 5]) -> [R, PH, PW, C]``.

    Introduced in notebook 08.
    """

    def __init__(self, pool_size, spatial_scale=1.0, **kwargs):
        # RoIs are pixel coordinates: mixed precision must not round them to float16.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.pool_size = _positive_pair(pool_size, "pool_size")
        self.spatial_scale = _positive_scale(spatial_scale)

    def build(self, features_shape, rois_shape):
        self.built = True

    def call(self, features, rois):
        height, width, _ = _check_features(features, "RoIPooling")
        _check_rois(rois, features, "RoIPooling")
        rois = ops.cast(rois, "float32")
        pool_height, pool_width = self.pool_size
        row_start, row_end = _roi_pool_bins(rois, self.spatial_scale, pool_height, height, 1)
        col_start, col_end = _roi_pool_bins(rois, self.spatial_scale, pool_width, width, 0)
        depths = (_table_depth(height, pool_height), _table_depth(width, pool_width))
        batch_index = _batch_index(rois, features)
        return _max_pool_bins(features, batch_index, row_start, row_end, col_start, col_end, depths)

    def compute_output_shape(self, features_shape, rois_shape):
        return (rois_shape[0], *self.pool_size, features_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, spatial_scale=self.spatial_scale)
        return config


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
class RoIAlign(keras.layers.Layer):
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

    def __init__(self, pool_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False, **kwargs):
        # RoIs are pixel coordinates: mixed precision must not round them to float16.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.pool_size = _positive_pair(pool_size, "pool_size")
        self.spatial_scale = _positive_scale(spatial_scale)
        if not isinstance(sampling_ratio, (int, np.integer)) or isinstance(sampling_ratio, bool):
            raise ValueError(
                f"sampling_ratio must be an int (<= 0 for adaptive), got {sampling_ratio!r}"
            )
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def build(self, features_shape, rois_shape):
        self.built = True

    def _sample_grid(self, rois, pooled, axis):
        """Per-RoI ``(start, bin_size, samples)`` along one axis (axis 0: x, 1: y)."""
        offset = 0.5 if self.aligned else 0.0
        scaled = rois[:, 1:] * np.float32(self.spatial_scale)
        start = scaled[:, axis] - offset
        length = (scaled[:, axis + 2] - offset) - start
        if not self.aligned:
            length = ops.maximum(length, 1.0)
        bin_size = length / np.float32(pooled)
        if self.sampling_ratio > 0:
            samples = ops.full(ops.shape(start), self.sampling_ratio, dtype="int32")
        else:
            samples = ops.cast(ops.ceil(bin_size), "int32")
        return start, bin_size, samples

    def call(self, features, rois):
        height, width, channels = _check_features(features, "RoIAlign")
        _check_rois(rois, features, "RoIAlign")
        rois = ops.cast(rois, "float32")
        pool_height, pool_width = self.pool_size
        batch_index = _batch_index(rois, features)
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

    def compute_output_shape(self, features_shape, rois_shape):
        return (rois_shape[0], *self.pool_size, features_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            pool_size=self.pool_size,
            spatial_scale=self.spatial_scale,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )
        return config


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
class SpatialPyramidPooling(keras.layers.Layer):
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

    def __init__(self, levels=(4, 2, 1), spatial_scale=1.0, **kwargs):
        # RoIs are pixel coordinates: mixed precision must not round them to float16.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        levels = tuple(levels) if isinstance(levels, (list, tuple)) else levels
        if not (
            isinstance(levels, tuple)
            and levels
            and all(
                isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0
                for n in levels
            )
        ):
            raise ValueError(
                f"levels must be a non-empty list or tuple of positive ints, got {levels!r}"
            )
        self.levels = tuple(int(n) for n in levels)
        self.spatial_scale = _positive_scale(spatial_scale)

    def build(self, features_shape, rois_shape=None):
        self.built = True

    def call(self, features, rois=None):
        height, width, channels = _check_features(features, "SpatialPyramidPooling")
        if rois is None:
            batch_size = ops.shape(features)[0]
            batch_index = ops.arange(batch_size, dtype="int32")
        else:
            _check_rois(rois, features, "SpatialPyramidPooling")
            rois = ops.cast(rois, "float32")
            batch_index = _batch_index(rois, features)
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
                edges = [
                    *_roi_pool_bins(rois, self.spatial_scale, level, height, 1),
                    *_roi_pool_bins(rois, self.spatial_scale, level, width, 0),
                ]
            depths = (_table_depth(height, level), _table_depth(width, level))
            level_max = _max_pool_bins(features, batch_index, *edges, depths)
            pooled.append(ops.reshape(level_max, (-1, level * level * channels)))
        return ops.concatenate(pooled, axis=1)

    def compute_output_shape(self, features_shape, rois_shape=None):
        rows = features_shape[0] if rois_shape is None else rois_shape[0]
        return (rows, sum(n * n for n in self.levels) * features_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(levels=self.levels, spatial_scale=self.spatial_scale)
        return config


# ---- RoI formats and the bin rule in NumPy ------------------------------------------------


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
    pool_height, pool_width = (pool_size, pool_size) if np.isscalar(pool_size) else pool_size
    projected = np.asarray(box, np.float32).reshape(4) * np.float32(spatial_scale)
    corners = np.sign(projected) * np.floor(np.abs(projected) + 0.5)
    edges = {}
    for name, pooled, start, end, size in (
        ("rows", pool_height, corners[1], corners[3], feature_size[0]),
        ("columns", pool_width, corners[0], corners[2], feature_size[1]),
    ):
        bin_size = np.float32(max(end - start + 1, 1)) / np.float32(pooled)
        index = np.arange(pooled, dtype=np.float32)
        low = np.clip(np.floor(index * bin_size) + start, 0, size)
        high = np.clip(np.ceil((index + 1) * bin_size) + start, 0, size)
        edges[name] = np.stack([low, high], axis=1).astype(np.int64)
    edges["projected"] = projected
    return edges


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

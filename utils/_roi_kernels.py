"""The fast kernel behind ``utils.layers.RoIPooling``: exact max over many rectangular bins.

Read ``utils.layers.roi_pool_reference`` first: it *is* RoI pooling, a loop over RoIs
and bins. This module computes the same numbers (bit for bit, ties and gradient
included) without a Python loop and without building anything of size
``[R, H, W, C]``, so it is fast eagerly, in ``tf.function`` and under XLA. Three tricks:

1. **A sparse table of window maxima.** Level ``(kh, kw)`` holds, for every cell
   ``(h, w)``, the max over the ``2**kh x 2**kw`` window whose top-left corner is that
   cell; each level is the max of two shifted copies of the level before. A bin of
   ``L`` rows (``2**k <= L < 2**(k + 1)``) is covered exactly by two windows of
   ``2**k`` rows, one aligned with its top and one with its bottom (they may overlap:
   max does not mind). So any bin is the max of four table look-ups, one ``gather``
   each, whatever its size. (Bins longer than twice the largest tabled window, which
   only RoIs much larger than the map have, take a few more look-ups in a loop.)
2. **Keys that carry the argmax.** The table does not hold the float values but int64
   keys: high 32 bits the value's bits made order-preserving, low 32 bits ``2**32 - 2``
   minus the cell's spatial index ``(b * H + h) * W + w``. The integer max of two keys
   is the larger value and, on ties, the earlier cell in row-major order, which is the
   maximum torchvision's scan keeps. One ``maximum`` per level does both jobs.
3. **A gradient that scatters to the argmax.** Decoding the winning key gives the
   value (the output) and the cell (where the gradient goes). The backward pass adds
   each output's gradient into its argmax element with one counting op
   (``DenseBincount`` with weights) in graph mode, ``unsorted_segment_sum`` under XLA,
   which is far cheaper than differentiating through the gathers.

Not part of the course's reading; see ``utils.layers`` for the layer. Introduced in
notebook 08.
"""

import math
import sys

import numpy as np
import tensorflow as tf
from keras import ops

try:  # Which scatter is fastest differs between XLA and plain graph mode.
    from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
except ImportError:  # pragma: no cover - a TensorFlow without the private helper

    def GraphOrParentsInXlaContext(graph):  # noqa: N802 - TensorFlow's name
        return False


_LOW_BITS = np.int64(2**32 - 1)
_EMPTY = np.int64(2**63 - 1)  # the largest key: marks empty bins under XLA (decodes to cell -1)
_SIGN_FREE = np.int32(2**31 - 1)
_HIGH_WORD = 1 if sys.byteorder == "little" else 0  # int64 viewed as two int32 words


def table_depth(size, pooled):
    """How many power-of-two window levels to precompute along an axis of ``size``.

    Enough for every bin of a RoI inside the map (at most ``ceil((size + 1) / pooled) + 1``
    long) to be covered by two windows; longer bins take more windows, not more levels.
    """
    longest_bin = min(size, math.ceil((size + 1) / pooled) + 1)
    return int(math.floor(math.log2(longest_bin)))


def _order_bits(bits):
    """float32 bits (as int32) to ints of the same order, and back (the map is its own inverse).

    Non-negative floats already compare like their bits; for negative ones the magnitude
    bits are flipped, so that -1 < -0.5 holds for the ints too.
    """
    negative = tf.bitwise.right_shift(bits, 31)  # all ones where negative, else 0
    return tf.bitwise.bitwise_xor(bits, tf.bitwise.bitwise_and(negative, _SIGN_FREE))


def _max_keys(features):
    """int64 keys ``[B, H, W, C]`` ordered by value, then by earlier row-major cell.

    ``+ 0.0`` turns -0 into 0 so the two tie, as they do for floats.
    """
    _, height, width, _ = features.shape
    ordered = _order_bits(tf.bitcast(tf.cast(features, tf.float32) + 0.0, tf.int32))
    cells = tf.range(tf.shape(features)[0] * height * width, dtype=tf.int64)
    low = tf.reshape((_LOW_BITS - 1) - cells, (-1, height, width, 1))
    return tf.bitwise.left_shift(tf.cast(ordered, tf.int64), np.int64(32)) + low


def _window_max_table(keys, depth_h, depth_w, stored_type=tf.int64):
    """Sparse table of window maxima of ``keys [B, H, W, C]``, levels concatenated.

    Level ``(kh, kw)`` is laid out like the map flattened to rows of ``C``: row
    ``(b * H + h) * W + w`` holds the max key over the ``2**kh x 2**kw`` window with
    top-left corner ``(h, w)``. Each level is the max of two shifted copies of the one
    before, shifted along the flattened rows (contiguous slices), so rows whose window
    would leave the image hold junk and are never read. Returns
    ``(table [sum of level lengths, C], offsets)``: level ``k`` starts at row
    ``k * B * H * W - offsets[k]``. The table holds the keys' bits as ``stored_type``.
    """
    _, height, width, channels = keys.shape
    rows = tf.reshape(keys, (-1, channels))
    levels, offsets, dropped = [], [], 0
    for kh in range(depth_h + 1):
        if kh:
            shift = 2 ** (kh - 1) * width
            rows = tf.maximum(rows[:-shift], rows[shift:])
        level, level_dropped = rows, (2**kh - 1) * width
        for kw in range(depth_w + 1):
            if kw:
                shift = 2 ** (kw - 1)
                level = tf.maximum(level[:-shift], level[shift:])
                level_dropped += shift
            levels.append(level)
            offsets.append(dropped)
            dropped += level_dropped
    stored = [
        level if stored_type == tf.int64 else tf.bitcast(level, stored_type) for level in levels
    ]
    return tf.concat(stored, axis=0), np.array(offsets, "int32")


def _window_level(length, depth):
    """Per-bin level ``min(floor(log2(length)), depth)`` for integer ``length >= 1``."""
    level = tf.zeros_like(length)
    for k in range(1, depth + 1):
        level = level + tf.cast(length >= 2**k, tf.int32)
    return level


def _in_xla():
    """Whether the op being built will be compiled by XLA (``jit_compile=True``)."""
    return GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _scatter_add(values, index, size):
    """``out[index[i]] += values[i]`` into a zero vector of ``size`` (1-D float32 tensors)."""
    if isinstance(size, int) and not _in_xla():
        return tf.raw_ops.DenseBincount(input=index, size=size, weights=values)
    return tf.math.unsorted_segment_sum(values, index, size)


def _split_keys(keys, xla):
    """int64 keys to their ``(high, low)`` 32-bit words, as int32."""
    if xla:  # XLA fuses the shifts; bitcasts to a new shape it runs slowly
        high = tf.cast(tf.bitwise.right_shift(keys, np.int64(32)), tf.int32)
        return high, tf.cast(keys, tf.int32)  # narrowing keeps the low word
    words = tf.bitcast(keys, tf.int32)
    return words[..., _HIGH_WORD], words[..., 1 - _HIGH_WORD]


def max_pool_bins(features, batch_index, row_start, row_end, col_start, col_end, depths):
    """Exact max over integer bins ``[row_start, row_end) x [col_start, col_end)``.

    ``batch_index`` is ``[R]``, row edges ``[R, PH]``, column edges ``[R, PW]`` (already
    clipped to the map); returns ``[R, PH, PW, C]``, 0 for empty bins. ``depths`` are
    ``table_depth`` of both axes. The gradient reaches exactly one input per output (the
    first maximum in row-major order, as torchvision's scan) and adds up over bins and
    RoIs.
    """
    batch_size = tf.shape(features)[0]
    _, height, width, channels = features.shape
    depth_h, depth_w = depths
    keys = _max_keys(tf.stop_gradient(features))
    # Outside XLA, concat and gather run faster on float64 than on int64 (same bits).
    xla = _in_xla()
    gathered_type = tf.int64 if xla else tf.float64
    table, dropped_rows = _window_max_table(keys, depth_h, depth_w, gathered_type)

    filled = (row_end > row_start)[:, :, None] & (col_end > col_start)[:, None, :]
    row_start = tf.minimum(row_start, height - 1)
    col_start = tf.minimum(col_start, width - 1)
    row_length = tf.maximum(row_end - row_start, 1)
    col_length = tf.maximum(col_end - col_start, 1)
    row_level = _window_level(row_length, depth_h)
    col_level = _window_level(col_length, depth_w)
    row_window = tf.bitwise.left_shift(1, row_level)
    col_window = tf.bitwise.left_shift(1, col_level)
    # Window j of a bin starts at min(start + j * window, end - window): two windows
    # (start- and end-aligned) cover any bin up to twice the window long; longer bins
    # (RoIs much larger than the map) take ceil(length / window).
    windows_down = ops.max((row_length + row_window - 1) // row_window, initial=2)
    windows_across = ops.max((col_length + col_window - 1) // col_window, initial=2)

    level = row_level[:, :, None] * (depth_w + 1) + col_level[:, None, :]
    level_start = level * (batch_size * height * width) - tf.gather(dropped_rows, level)
    image_row = batch_index[:, None] * height

    def window(down, across):
        """Max key of window ``(down, across)`` of every bin, ``[R, PH, PW, C]``."""
        top = tf.minimum(row_start + down * row_window, row_start + row_length - row_window)
        left = tf.minimum(col_start + across * col_window, col_start + col_length - col_window)
        index = level_start + ((image_row + top) * width)[:, :, None] + left[:, None, :]
        found = tf.gather(table, index)
        return found if gathered_type == tf.int64 else tf.bitcast(found, tf.int64)

    best = window(0, 0)
    if xla:  # XLA runs a [R, PH, PW, 1] mask inside the scatter slowly: mark the keys instead
        best = tf.where(filled[..., None], best, _EMPTY)
    for down, across in ((0, 1), (1, 0), (1, 1)):
        best = tf.maximum(best, window(down, across))
    # The windows beyond the first two per axis: rows 2.. (all columns), then columns
    # 2.. of rows 0 and 1. The loop runs zero times unless a bin is that long.
    below = (windows_down - 2) * windows_across
    beside = tf.maximum(windows_across - 2, 1)

    def add_window(number, best):
        in_rows_below = number < below
        down = tf.where(in_rows_below, 2 + number // windows_across, (number - below) // beside)
        across = tf.where(in_rows_below, number % windows_across, 2 + (number - below) % beside)
        return number + 1, tf.maximum(best, window(down, across))

    extra = below + 2 * (windows_across - 2)
    _, best = tf.while_loop(lambda number, _: number < extra, add_window, (0, best))

    # Decode the winning keys: the high word is the value, the low word the cell.
    high, low = _split_keys(best, xla)
    value = tf.bitcast(_order_bits(high), tf.float32)
    maximum = tf.where(high == _SIGN_FREE if xla else ~filled[..., None], 0.0, value)
    cell = tf.bitwise.invert(low) - 1  # (2**32 - 2 - cell) as int32 is ~cell - 1; _EMPTY's is -1

    @tf.custom_gradient
    def route_to_argmax(features):
        def gradient(upstream):
            upstream = tf.cast(upstream, tf.float32)
            if not xla:
                upstream = tf.where(filled[..., None], upstream, 0.0)
            # Under XLA the empty bins' elements are negative: the scatter drops them.
            element = cell * channels + tf.range(channels)
            size = features.shape.num_elements()
            size = tf.size(features) if size is None else int(size)
            routed = _scatter_add(tf.reshape(upstream, (-1,)), tf.reshape(element, (-1,)), size)
            return tf.cast(tf.reshape(routed, tf.shape(features)), features.dtype)

        return tf.cast(maximum, features.dtype), gradient

    return route_to_argmax(features)

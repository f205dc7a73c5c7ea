"""The fast kernel behind ``utils.layers.RoIPooling``: exact max over many rectangular bins.

Read ``utils.layers.roi_pool_reference`` first: it *is* RoI pooling, a loop over RoIs
and bins. This module computes the same numbers (bit for bit, ties and gradient
included) without a Python loop and without building anything of size
``[R, H, W, C]``, so it is fast eagerly, in ``tf.function`` and under XLA. Four tricks:

1. **A sparse table of window maxima.** Level ``(i, j)`` holds, for every cell
   ``(h, w)``, the max over the ``sizes_h[i] x sizes_w[j]`` window whose top-left
   corner is that cell; a window twice as long is the max of two shifted copies of the
   shorter one. With lengths ``1, 2, 4, ...`` a bin of ``L`` rows (``2**k <= L <
   2**(k + 1)``) is covered exactly by two windows of ``2**k`` rows, one aligned with
   its top and one with its bottom (they may overlap: max does not mind). So any bin
   is the max of four table look-ups, one ``gather`` each, whatever its size.
2. **Fewer levels under XLA.** XLA fuses the gathers with their max, so a look-up is
   cheap there, but it writes the table's levels out one after another on one core.
   Under XLA the table holds lengths ``1, 4, 16, ...`` (4 levels instead of 12 for a
   VGG16 map and 7 x 7 bins) and each bin reads three windows per axis: the same
   maxima in about 40% less time. (Bins longer than the static windows cover, which only
   RoIs much larger than the map have, take more look-ups in a loop.)
3. **Keys that carry the argmax.** The table does not hold the float values but int64
   keys: high 32 bits the value's bits made order-preserving, low 32 bits ``2**32 - 1``
   minus the element's flat index ``((b * H + h) * W + w) * C + c``. The integer max of
   two keys is the larger value and, on ties, the earlier cell in row-major order,
   which is the maximum torchvision's scan keeps. One ``maximum`` per level does both
   jobs. Empty bins read one extra table row: value 0 at a dummy element past the map.
4. **A gradient that scatters to the argmax.** Decoding the winning key gives the
   value (the output) and the element (where the gradient goes). The backward pass
   adds each output's gradient into its argmax element with one counting op
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
_SIGN_FREE = np.int32(2**31 - 1)
_HIGH_WORD = 1 if sys.byteorder == "little" else 0  # int64 viewed as two int32 words


def longest_bin(size, pooled):
    """The longest bin of a RoI inside a map axis of ``size`` split into ``pooled`` bins.

    At most ``ceil((size + 1) / pooled) + 1`` cells (torchvision's float32 edges can add
    one), and never more than the axis. Longer bins, which only RoIs larger than the map
    have, are handled too (more windows), just not planned for.
    """
    return min(size, math.ceil((size + 1) / pooled) + 1)


def window_sizes(longest, base):
    """The tabled window lengths along an axis: ``1, base, base**2, ...`` up to ``longest``."""
    sizes = [1]
    while sizes[-1] * base <= longest:
        sizes.append(sizes[-1] * base)
    return sizes


def windows_per_bin(longest, sizes):
    """How many windows cover the worst bin up to ``longest`` cells: the static count."""
    return max(
        -(-length // max(s for s in sizes if s <= length)) for length in range(1, longest + 1)
    )


def _order_bits(bits):
    """float32 bits (as int32) to ints of the same order, and back (the map is its own inverse).

    Non-negative floats already compare like their bits; for negative ones the magnitude
    bits are flipped, so that -1 < -0.5 holds for the ints too.
    """
    negative = tf.bitwise.right_shift(bits, 31)  # all ones where negative, else 0
    return tf.bitwise.bitwise_xor(bits, tf.bitwise.bitwise_and(negative, _SIGN_FREE))


def _max_keys(features):
    """int64 keys ``[B, H, W, C]`` ordered by value, then by earlier element.

    High 32 bits: the value's bits made order-preserving; low 32 bits: ``2**32 - 1``
    minus the element's flat index ``((b * H + h) * W + w) * C + c``, so that of two
    equal values the earlier cell (row-major, same channel) has the larger key.
    ``+ 0.0`` turns -0 into 0 so the two tie, as they do for floats.
    """
    ordered = _order_bits(tf.bitcast(tf.cast(features, tf.float32) + 0.0, tf.int32))
    elements = tf.size(features, out_type=tf.int64)
    low = tf.reshape(
        tf.range(_LOW_BITS, _LOW_BITS - elements, -1, dtype=tf.int64), tf.shape(features)
    )
    return tf.bitwise.left_shift(tf.cast(ordered, tf.int64), np.int64(32)) + low


def _window_max_table(keys, sizes_h, sizes_w, stored_type=tf.int64):
    """Sparse table of window maxima of ``keys [B, H, W, C]``, levels concatenated.

    Level ``(i, j)`` is laid out like the map flattened to rows of ``C``: row
    ``(b * H + h) * W + w`` holds the max key over the ``sizes_h[i] x sizes_w[j]``
    window with top-left corner ``(h, w)``. A window of length ``2 * n`` is the max of
    two of length ``n``, shifted along the flattened rows (contiguous slices), so rows
    whose window would leave the image hold junk and are never read. Returns
    ``(table [sum of level lengths, C], offsets)``: level ``k`` starts at row
    ``k * B * H * W - offsets[k]``. The table holds the keys' bits as ``stored_type``.
    """
    _, height, width, channels = keys.shape

    def grow(rows, have, want, step):
        """Windows of ``have`` cells to ``want`` along rows ``step`` apart, by doubling."""
        while have < want:
            shift = min(have, want - have)
            rows = tf.maximum(rows[: -shift * step], rows[shift * step :])
            have += shift
        return rows

    rows, have = tf.reshape(keys, (-1, channels)), 1
    levels, offsets, dropped = [], [], 0
    for size_h in sizes_h:
        rows, have = grow(rows, have, size_h, width), size_h
        level, level_have = rows, 1
        for size_w in sizes_w:
            level, level_have = grow(level, level_have, size_w, 1), size_w
            levels.append(level)
            offsets.append(dropped)
            dropped += (size_h - 1) * width + size_w - 1
    stored = [
        level if stored_type == tf.int64 else tf.bitcast(level, stored_type) for level in levels
    ]
    return tf.concat(stored, axis=0), np.array(offsets, "int32")


def _window_level(length, sizes):
    """Per-bin index of the longest tabled window that fits: ``sizes[i] <= length``."""
    level = tf.zeros_like(length)
    for size in sizes[1:]:
        level = level + tf.cast(length >= size, tf.int32)
    return level


def _in_xla():
    """Whether the op being built will be compiled by XLA (``jit_compile=True``)."""
    return GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _scatter_add(values, index, size):
    """``out[index[i]] += values[i]`` into a zero vector of ``size`` (1-D float32 tensors)."""
    if isinstance(size, int) and not _in_xla():
        return tf.raw_ops.DenseBincount(input=index, size=size, weights=values)
    return tf.math.unsorted_segment_sum(values, index, size)


def max_pool_bins(features, batch_index, row_start, row_end, col_start, col_end, longest):
    """Exact max over integer bins ``[row_start, row_end) x [col_start, col_end)``.

    ``batch_index`` is ``[R]``, row edges ``[R, PH]``, column edges ``[R, PW]`` (already
    clipped to the map); returns ``[R, PH, PW, C]``, 0 for empty bins. ``longest`` is
    ``longest_bin`` of both axes. The gradient reaches exactly one input per output (the
    first maximum in row-major order, as torchvision's scan) and adds up over bins and
    RoIs.
    """
    batch_size = tf.shape(features)[0]
    _, height, width, channels = features.shape
    # Outside XLA each gather is a pass over memory: table every power of two, so two
    # windows per axis cover a bin. XLA fuses the gathers with their max but not the
    # table's concat: table fewer lengths (powers of 4) and read three windows per axis.
    xla = _in_xla()
    sizes_h, sizes_w = (window_sizes(n, 4 if xla else 2) for n in longest)
    static_down, static_across = (
        windows_per_bin(n, sizes) for n, sizes in zip(longest, (sizes_h, sizes_w), strict=True)
    )
    keys = _max_keys(tf.stop_gradient(features))
    # Outside XLA, concat and gather run faster on float64 than on int64 (same bits).
    gathered_type = tf.int64 if xla else tf.float64
    table, dropped_rows = _window_max_table(keys, sizes_h, sizes_w, gathered_type)
    # One more row for the empty bins: value 0 at a dummy element one row past the map,
    # whose gradient is dropped. Empty bins read only this row, so no mask is needed.
    elements = tf.size(features)
    dummy_row = tf.range(
        _LOW_BITS - tf.cast(elements, tf.int64),
        _LOW_BITS - tf.cast(elements + channels, tf.int64),
        -1,
        dtype=tf.int64,
    )
    if not xla:
        dummy_row = tf.bitcast(dummy_row, gathered_type)
    empty_index = tf.shape(table)[0]
    table = tf.concat([table, dummy_row[None]], axis=0)

    filled = (row_end > row_start)[:, :, None] & (col_end > col_start)[:, None, :]
    row_start = tf.minimum(row_start, height - 1)
    col_start = tf.minimum(col_start, width - 1)
    row_length = tf.maximum(row_end - row_start, 1)
    col_length = tf.maximum(col_end - col_start, 1)
    row_level = _window_level(row_length, sizes_h)
    col_level = _window_level(col_length, sizes_w)
    row_window = tf.gather(np.array(sizes_h, "int32"), row_level)
    col_window = tf.gather(np.array(sizes_w, "int32"), col_level)
    # Window j of a bin starts at min(start + j * window, end - window): the static
    # windows cover every bin of a RoI inside the map; longer bins (RoIs much larger
    # than the map) take ceil(length / window).
    windows_down = ops.max((row_length + row_window - 1) // row_window, initial=static_down)
    windows_across = ops.max((col_length + col_window - 1) // col_window, initial=static_across)

    level = row_level[:, :, None] * len(sizes_w) + col_level[:, None, :]
    level_start = level * (batch_size * height * width) - tf.gather(dropped_rows, level)
    image_row = batch_index[:, None] * height

    def window(down, across):
        """Max key of window ``(down, across)`` of every bin, ``[R, PH, PW, C]``."""
        top = tf.minimum(row_start + down * row_window, row_start + row_length - row_window)
        left = tf.minimum(col_start + across * col_window, col_start + col_length - col_window)
        index = level_start + ((image_row + top) * width)[:, :, None] + left[:, None, :]
        found = tf.gather(table, tf.where(filled, index, empty_index))
        return found if gathered_type == tf.int64 else tf.bitcast(found, tf.int64)

    best = window(0, 0)
    for down in range(static_down):
        for across in range(static_across):
            if down or across:
                best = tf.maximum(best, window(down, across))
    # The windows beyond the static ones: further rows (all columns), then further
    # columns of the static rows. The loop runs zero times unless a bin is that long.
    below = (windows_down - static_down) * windows_across
    beside = tf.maximum(windows_across - static_across, 1)

    def add_window(number, best):
        in_rows_below = number < below
        down = tf.where(
            in_rows_below, static_down + number // windows_across, (number - below) // beside
        )
        across = tf.where(
            in_rows_below, number % windows_across, static_across + (number - below) % beside
        )
        return number + 1, tf.maximum(best, window(down, across))

    extra = below + static_down * (windows_across - static_across)
    _, best = tf.while_loop(lambda number, _: number < extra, add_window, (0, best))

    # Decode the winning keys: the low word is (2**32 - 1 - element), as int32 ~element;
    # the high word is the value.
    if xla:  # XLA fuses the shifts; bitcasts to a new shape it runs slowly
        high = tf.cast(tf.bitwise.right_shift(best, np.int64(32)), tf.int32)
        low = tf.cast(best, tf.int32)  # narrowing keeps the low word
    else:
        words = tf.bitcast(best, tf.int32)
        high, low = words[..., _HIGH_WORD], words[..., 1 - _HIGH_WORD]
    maximum = tf.bitcast(_order_bits(high), tf.float32)
    element = tf.bitwise.invert(low)

    @tf.custom_gradient
    def route_to_argmax(features):
        def gradient(upstream):
            upstream = tf.cast(upstream, tf.float32)
            size = features.shape.num_elements()
            size = elements + channels if size is None else int(size) + channels
            routed = _scatter_add(tf.reshape(upstream, (-1,)), tf.reshape(element, (-1,)), size)
            return tf.cast(tf.reshape(routed[:-channels], tf.shape(features)), features.dtype)

        return tf.cast(maximum, features.dtype), gradient

    return route_to_argmax(features)

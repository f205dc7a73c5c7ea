"""RoIPooling, RoIAlign and SpatialPyramidPooling against slow, obvious NumPy loops.

``reference_roi_pool`` below is written independently of ``utils.layers.roi_pool_reference``
(the readable reference in the library): the layer must match both.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from utils import _roi_kernels as kernels
from utils.layers import (
    RoIAlign,
    RoIPooling,
    SpatialPyramidPooling,
    roi_pool_bins,
    roi_pool_reference,
    spatial_pyramid_bins,
)


def c_round(value):
    """C's round(): half away from zero."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def reference_roi_pool(features, rois, pool_size, spatial_scale):
    """torchvision roi_pool, one bin at a time: ``(output, argmax flat index or -1)``."""
    batch, height, width, channels = features.shape
    pool_height, pool_width = pool_size
    scale = np.float32(spatial_scale)
    output = np.zeros((len(rois), pool_height, pool_width, channels), np.float32)
    argmax = np.full(output.shape, -1, np.int64)
    for r, roi in enumerate(rois.astype(np.float32)):
        b = int(roi[0])
        x_start, y_start, x_end, y_end = (c_round(v * scale) for v in roi[1:])
        bin_h = np.float32(max(y_end - y_start + 1, 1)) / np.float32(pool_height)
        bin_w = np.float32(max(x_end - x_start + 1, 1)) / np.float32(pool_width)
        for ph in range(pool_height):
            h0 = min(max(int(np.floor(np.float32(ph) * bin_h)) + y_start, 0), height)
            h1 = min(max(int(np.ceil(np.float32(ph + 1) * bin_h)) + y_start, 0), height)
            for pw in range(pool_width):
                w0 = min(max(int(np.floor(np.float32(pw) * bin_w)) + x_start, 0), width)
                w1 = min(max(int(np.ceil(np.float32(pw + 1) * bin_w)) + x_start, 0), width)
                if h1 <= h0 or w1 <= w0:
                    continue
                window = features[b, h0:h1, w0:w1].reshape(-1, channels)
                first = window.argmax(axis=0)  # first maximum in row-major order
                output[r, ph, pw] = window[first, np.arange(channels)]
                h, w = h0 + first // (w1 - w0), w0 + first % (w1 - w0)
                argmax[r, ph, pw] = ((b * height + h) * width + w) * channels + np.arange(channels)
    return output, argmax


def reference_roi_pool_gradient(features, argmax, upstream):
    gradient = np.zeros(features.size, np.float64)
    used = argmax >= 0
    np.add.at(gradient, argmax[used], upstream[used])
    return gradient.reshape(features.shape)


def reference_roi_align(features, rois, pool_size, spatial_scale, sampling_ratio, aligned):
    """torchvision roi_align, one sample at a time: ``(output, weights)``.

    ``weights[r, ph, pw]`` maps flat spatial index ``(b * H + y) * W + x`` to the total
    weight of that input in the output, for the gradient.
    """
    batch, height, width, channels = features.shape
    pool_height, pool_width = pool_size
    f32 = np.float32
    scale, offset = f32(spatial_scale), f32(0.5 if aligned else 0.0)
    output = np.zeros((len(rois), pool_height, pool_width, channels), np.float64)
    weights = {}
    for r, roi in enumerate(rois.astype(np.float32)):
        b = int(roi[0])
        start_w, start_h = roi[1] * scale - offset, roi[2] * scale - offset
        roi_w, roi_h = roi[3] * scale - offset - start_w, roi[4] * scale - offset - start_h
        if not aligned:
            roi_w, roi_h = max(roi_w, f32(1)), max(roi_h, f32(1))
        bin_h, bin_w = f32(roi_h / f32(pool_height)), f32(roi_w / f32(pool_width))
        grid_h = sampling_ratio if sampling_ratio > 0 else int(np.ceil(bin_h))
        grid_w = sampling_ratio if sampling_ratio > 0 else int(np.ceil(bin_w))
        count = max(grid_h * grid_w, 1)
        for ph in range(pool_height):
            for pw in range(pool_width):
                taken = weights.setdefault((r, ph, pw), {})
                for iy in range(grid_h):
                    y = start_h + f32(ph) * bin_h + f32(iy + 0.5) * bin_h / f32(grid_h)
                    for ix in range(grid_w):
                        x = start_w + f32(pw) * bin_w + f32(ix + 0.5) * bin_w / f32(grid_w)
                        if y < -1 or y > height or x < -1 or x > width:
                            continue
                        yy, xx = max(y, f32(0)), max(x, f32(0))
                        y_low, x_low = int(yy), int(xx)
                        if y_low >= height - 1:
                            y_low = y_high = height - 1
                            yy = f32(y_low)
                        else:
                            y_high = y_low + 1
                        if x_low >= width - 1:
                            x_low = x_high = width - 1
                            xx = f32(x_low)
                        else:
                            x_high = x_low + 1
                        ly, lx = yy - y_low, xx - x_low
                        for row, col, weight in (
                            (y_low, x_low, (1 - ly) * (1 - lx)),
                            (y_low, x_high, (1 - ly) * lx),
                            (y_high, x_low, ly * (1 - lx)),
                            (y_high, x_high, ly * lx),
                        ):
                            output[r, ph, pw] += weight * features[b, row, col] / count
                            index = (b * height + row) * width + col
                            taken[index] = taken.get(index, 0.0) + weight / count
    return output.astype(np.float32), weights


def reference_roi_align_gradient(features, weights, upstream):
    gradient = np.zeros((features.size // features.shape[-1], features.shape[-1]))
    for (r, ph, pw), taken in weights.items():
        for index, weight in taken.items():
            gradient[index] += weight * upstream[r, ph, pw]
    return gradient.reshape(features.shape)


def random_rois(rng, count, batch, height, width, spatial_scale):
    """RoIs with fractional corners: inside, partly off the map, tiny and degenerate."""
    image_h, image_w = height / spatial_scale, width / spatial_scale
    x1 = rng.uniform(-0.3 * image_w, image_w, count)
    y1 = rng.uniform(-0.3 * image_h, image_h, count)
    size = rng.choice([0.3, 2.0, 0.4 * image_w, 1.3 * image_w], count) * rng.uniform(0.5, 1, count)
    x2 = x1 + size * rng.uniform(-0.1, 1.2, count)
    y2 = y1 + size * rng.uniform(-0.1, 1.2, count)
    return np.stack([rng.integers(0, batch, count), x1, y1, x2, y2], axis=1).astype(np.float32)


def gradient_of(layer, features, rois, upstream):
    features = tf.constant(features)
    with tf.GradientTape() as tape:
        tape.watch(features)
        output = layer(features, rois)
    return output.numpy(), tf.convert_to_tensor(tape.gradient(output, features, upstream)).numpy()


# --- RoIPooling ---------------------------------------------------------------------


def test_roi_pooling_worked_example_from_d2l():
    features = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    rois = np.array([[0, 0, 0, 20, 20], [0, 0, 10, 30, 30]], np.float32)
    output = RoIPooling(2, spatial_scale=0.1)(features, rois).numpy()[..., 0]
    np.testing.assert_array_equal(output[0], [[5, 6], [9, 10]])
    np.testing.assert_array_equal(output[1], [[9, 11], [13, 15]])


def test_roi_pooling_rounds_half_away_from_zero():
    # x1 * scale = 2.5: C's round gives 3 (the window starts at column 3); banker's
    # rounding would give 2 and pick up column 2's larger values.
    features = np.zeros((1, 1, 6, 1), np.float32)
    features[0, 0, :, 0] = [0, 1, 9, 2, 3, 4]
    rois = np.array([[0, 25, 0, 35, 0]], np.float32)
    output = RoIPooling((1, 1), spatial_scale=0.1)(features, rois).numpy()
    assert output.ravel().tolist() == [3.0]
    reference, _ = reference_roi_pool(features, rois, (1, 1), 0.1)
    assert reference.ravel().tolist() == [3.0]
    # Negative coordinates round away from zero too: -2.5 -> -3, so the bins start off the map.
    rois = np.array([[0, -25, 0, 35, 0]], np.float32)
    output = RoIPooling((1, 4), spatial_scale=0.1)(features, rois).numpy()
    np.testing.assert_array_equal(output, reference_roi_pool(features, rois, (1, 4), 0.1)[0])


@pytest.mark.parametrize(
    ("pool_size", "spatial_scale", "shape"),
    [((2, 2), 1.0, (2, 5, 6, 3)), ((3, 4), 0.5, (2, 7, 9, 2)), ((7, 7), 0.25, (1, 11, 13, 2))],
)
def test_roi_pooling_matches_reference_on_random_rois(pool_size, spatial_scale, shape):
    rng = np.random.default_rng(sum(shape))
    features = rng.normal(size=shape).astype(np.float32)
    rois = random_rois(rng, 40, shape[0], shape[1], shape[2], spatial_scale)
    upstream = rng.normal(size=(len(rois), *pool_size, shape[3])).astype(np.float32)
    output, gradient = gradient_of(RoIPooling(pool_size, spatial_scale), features, rois, upstream)
    expected, argmax = reference_roi_pool(features, rois, pool_size, spatial_scale)
    np.testing.assert_array_equal(output, expected)
    np.testing.assert_allclose(
        gradient, reference_roi_pool_gradient(features, argmax, upstream), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_roi_pooling_bins_longer_than_the_largest_window(mode):
    # RoIs far larger than the 19x23 map: with a 3x3 pool the middle bin covers the
    # whole map, 19 x 23 cells, longer than the static windows cover (two 8-cell
    # windows per axis in eager and graph mode, three 4-cell ones under XLA), so the
    # lookup takes more windows in its loop.
    rng = np.random.default_rng(3)
    features = rng.normal(size=(1, 19, 23, 2)).astype(np.float32)
    # Only windows beyond the static ones along an axis reach these: down and across
    # for channel 0, across only for channel 1.
    features[0, 17, 21, 0] = features[0, 3, 21, 1] = 10.0
    rois = np.array([[0, -40, -40, 60, 60], [0, 0, 0, 22, 18], [0, 3, 0, 9, 18]], np.float32)

    def pool(pool_size, rois):
        layer = RoIPooling(pool_size)
        if mode == "eager":
            return layer(features, rois).numpy()
        run = tf.function(lambda f, r: layer(f, r), jit_compile=mode == "xla")
        return run(tf.constant(features), tf.constant(rois)).numpy()

    for pool_size in [(3, 3), (1, 1), (2, 3)]:
        expected = reference_roi_pool(features, rois, pool_size, 1.0)[0]
        np.testing.assert_array_equal(pool(pool_size, rois), expected)
    np.testing.assert_array_equal(pool(3, rois[:1])[0, 1, 1], [10.0, 10.0])


def test_kernel_plans_enough_windows_for_every_bin_inside_the_map():
    # VGG16's 38 x 50 map, 7 x 7 bins: bins up to 7 rows and 9 columns.
    assert [kernels.longest_bin(n, 7) for n in (38, 50)] == [7, 9]
    assert kernels.window_sizes(9, 2) == [1, 2, 4, 8]
    assert kernels.window_sizes(9, 4) == [1, 4]
    assert kernels.windows_per_bin(9, [1, 2, 4, 8]) == 2  # powers of 2: two windows
    assert kernels.windows_per_bin(9, [1, 4]) == 3  # 3 = 1 + 1 + 1 and 9 = 4 + 4 + 1
    assert kernels.windows_per_bin(1, [1]) == 1


def test_roi_pooling_ties_route_gradient_to_first_maximum():
    rng = np.random.default_rng(4)
    features = rng.integers(0, 3, size=(2, 6, 7, 3)).astype(np.float32)
    rois = random_rois(rng, 25, 2, 6, 7, 1.0)
    upstream = rng.normal(size=(25, 3, 3, 3)).astype(np.float32)
    output, gradient = gradient_of(RoIPooling(3), features, rois, upstream)
    expected, argmax = reference_roi_pool(features, rois, (3, 3), 1.0)
    np.testing.assert_array_equal(output, expected)
    np.testing.assert_allclose(
        gradient, reference_roi_pool_gradient(features, argmax, upstream), rtol=1e-6, atol=1e-6
    )


def test_roi_pooling_rois_off_the_map_and_degenerate_give_zeros():
    features = np.ones((1, 4, 4, 2), np.float32) * -5
    rois = np.array([[0, 100, 100, 120, 120], [0, -50, -50, -30, -30], [0, 3, 3, 1, 1]], np.float32)
    output, gradient = gradient_of(RoIPooling(2), features, rois, np.ones((3, 2, 2, 2), np.float32))
    assert np.all(np.isfinite(output))
    np.testing.assert_array_equal(output[:2], 0.0)
    np.testing.assert_array_equal(
        gradient,
        reference_roi_pool_gradient(
            features, reference_roi_pool(features, rois, (2, 2), 1.0)[1], np.ones((3, 2, 2, 2))
        ),
    )
    # The degenerate box (x2 < x1) is a 1x1 window at its rounded start, as torchvision.
    np.testing.assert_array_equal(output[2], -5.0)


@pytest.mark.parametrize("ties", [False, True])
def test_readable_reference_equals_the_independent_loop_and_the_layer(ties):
    # Edge cases: RoIs partly or wholly off the map, tiny and degenerate boxes (empty
    # bins), and with small integer features many tied maxima.
    rng = np.random.default_rng(21 + ties)
    shape = (2, 9, 11, 3)
    features = rng.normal(size=shape).astype(np.float32)
    if ties:
        features = rng.integers(-1, 2, size=shape).astype(np.float32)
    for pool_size, spatial_scale in (((3, 3), 1.0), ((2, 4), 0.5), ((7, 7), 0.25)):
        rois = random_rois(rng, 30, shape[0], shape[1], shape[2], spatial_scale)
        expected, _ = reference_roi_pool(features, rois, pool_size, spatial_scale)
        readable = roi_pool_reference(features, rois, pool_size, spatial_scale)
        np.testing.assert_array_equal(readable, expected)
        layer = RoIPooling(pool_size, spatial_scale)
        np.testing.assert_array_equal(layer(features, rois).numpy(), expected)


def test_roi_pool_bins_are_the_bins_of_the_independent_loop():
    # Box (x1, y1, x2, y2) = (13, 7, 60, 33) at scale 1/4: cells 3..15 across, 2..8 down.
    bins = roi_pool_bins((13, 7, 60, 33), 0.25, (3, 2), (10, 12))
    np.testing.assert_array_equal(bins["rows"], [[2, 5], [4, 7], [6, 9]])
    np.testing.assert_array_equal(bins["columns"], [[3, 10], [9, 12]])  # clipped to W = 12
    np.testing.assert_allclose(bins["projected"], [3.25, 1.75, 15.0, 8.25])


@pytest.mark.parametrize("jit_compile", [False, True])
def test_roi_pooling_gradient_in_graph_modes_equals_the_reference(jit_compile):
    rng = np.random.default_rng(5 + jit_compile)
    features = rng.integers(0, 3, size=(2, 10, 12, 4)).astype(np.float32)  # ties
    rois = random_rois(rng, 50, 2, 10, 12, 0.5)
    upstream = rng.normal(size=(50, 3, 4, 4)).astype(np.float32)
    layer = RoIPooling((3, 4), 0.5)

    @tf.function(jit_compile=jit_compile)
    def forward_backward(features, rois, upstream):
        with tf.GradientTape() as tape:
            tape.watch(features)
            output = layer(features, rois)
        return output, tape.gradient(output, features, upstream)

    output, gradient = forward_backward(tf.constant(features), tf.constant(rois), upstream)
    expected, argmax = reference_roi_pool(features, rois, (3, 4), 0.5)
    np.testing.assert_array_equal(output.numpy(), expected)
    np.testing.assert_allclose(
        gradient.numpy(),
        reference_roi_pool_gradient(features, argmax, upstream),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("pool_size", [7, 13])
def test_roi_pooling_bins_are_torchvisions_in_every_mode(jit_compile, pool_size):
    # Graph mode and XLA turn x / 7 into x * (1 / 7), which moves some float32 bin edges
    # (a RoI 3 cells long: ceil(7 * (3 * (1 / 7))) = 4, not 3); the edges must stay
    # torchvision's float32 ones in every mode, on a VGG16-sized map with float RoIs.
    rng = np.random.default_rng(11)
    features = rng.normal(size=(2, 38, 50, 2)).astype(np.float32)
    rois = random_rois(rng, 400, 2, 38, 50, 1 / 16)
    layer = RoIPooling(pool_size, 1 / 16)
    compiled = tf.function(lambda f, r: layer(f, r), jit_compile=jit_compile)
    expected, _ = reference_roi_pool(features, rois, (pool_size, pool_size), 1 / 16)
    np.testing.assert_array_equal(compiled(tf.constant(features), tf.constant(rois)), expected)


# --- RoIAlign -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool_size", "spatial_scale", "sampling_ratio", "aligned"),
    [
        ((2, 2), 1.0, 2, True),
        ((3, 2), 0.5, 1, False),
        ((4, 4), 0.25, -1, True),
        ((2, 3), 1.0, 0, False),
    ],
)
def test_roi_align_matches_reference_on_random_rois(
    pool_size, spatial_scale, sampling_ratio, aligned
):
    rng = np.random.default_rng(pool_size[0] * 10 + sampling_ratio + 3)
    features = rng.normal(size=(2, 6, 7, 3)).astype(np.float32)
    rois = random_rois(rng, 30, 2, 6, 7, spatial_scale)
    layer = RoIAlign(pool_size, spatial_scale, sampling_ratio, aligned)
    upstream = rng.normal(size=(len(rois), *pool_size, 3)).astype(np.float32)
    output, gradient = gradient_of(layer, features, rois, upstream)
    expected, weights = reference_roi_align(
        features, rois, pool_size, spatial_scale, sampling_ratio, aligned
    )
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        gradient, reference_roi_align_gradient(features, weights, upstream), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("jit_compile", [False, True])
def test_roi_align_adaptive_sampling_is_torchvisions_in_graph_modes(jit_compile):
    # sampling_ratio=0 takes ceil(bin size) samples: a reciprocal rewrite of the bin
    # size (see the RoIPooling test above) would change the count, not just round-off.
    rng = np.random.default_rng(12)
    features = rng.normal(size=(1, 32, 48, 2)).astype(np.float32)
    # RoIs 21 or 42 cells long in 7 bins: bin size 3 or 6 exactly, while
    # 21 * float32(1 / 7) rounds to 3.0000002, which would take 4 samples.
    x1, y1 = rng.integers(0, 6, (2, 40)) * 4.0
    lengths = rng.choice([7, 14, 21, 42], (40, 2)) * 4.0
    rois = np.stack([np.zeros(40), x1, y1, x1 + lengths[:, 0], y1 + lengths[:, 1]], 1)
    rois = rois.astype(np.float32)
    layer = RoIAlign(7, 0.25, sampling_ratio=0, aligned=False)
    compiled = tf.function(lambda f, r: layer(f, r), jit_compile=jit_compile)
    expected, _ = reference_roi_align(features, rois, (7, 7), 0.25, 0, False)
    output = compiled(tf.constant(features), tf.constant(rois)).numpy()
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)


def test_roi_align_matches_crop_and_resize_with_the_spec_mapping():
    rng = np.random.default_rng(5)
    height, width, pool, scale = 9, 11, 3, 0.5
    features = rng.normal(size=(2, height, width, 4)).astype(np.float32)
    # Boxes well inside the map, so every sample lies in [0, H - 1] where the two agree.
    x1 = rng.uniform(2, 8, 12)
    y1 = rng.uniform(2, 6, 12)
    x2, y2 = x1 + rng.uniform(2, 10, 12), y1 + rng.uniform(2, 8, 12)
    rois = np.stack([rng.integers(0, 2, 12), x1, y1, x2, y2], 1).astype(np.float32)
    output = RoIAlign(pool, scale, sampling_ratio=1, aligned=True)(features, rois).numpy()

    def normalized(start, end, size):
        start, length = start * scale - 0.5, (end - start) * scale
        half_bin = length / (2 * pool)
        return (start + half_bin) / (size - 1), (start + length - half_bin) / (size - 1)

    yn1, yn2 = normalized(rois[:, 2], rois[:, 4], height)
    xn1, xn2 = normalized(rois[:, 1], rois[:, 3], width)
    crops = tf.image.crop_and_resize(
        features, np.stack([yn1, xn1, yn2, xn2], 1), rois[:, 0].astype(np.int32), (pool, pool)
    )
    np.testing.assert_allclose(output, crops.numpy(), rtol=1e-4, atol=1e-4)


def test_roi_align_off_the_map_is_zero_and_degenerate_is_finite():
    features = np.ones((1, 5, 5, 2), np.float32)
    rois = np.array([[0, 50, 50, 60, 60], [0, 4, 4, 1, 1], [0, 2, 2, 2, 2]], np.float32)
    for aligned in (True, False):
        for sampling_ratio in (-1, 2):
            layer = RoIAlign(2, 1.0, sampling_ratio, aligned)
            output = layer(features, rois).numpy()
            assert np.all(np.isfinite(output))
            np.testing.assert_array_equal(output[0], 0.0)
            expected, _ = reference_roi_align(features, rois, (2, 2), 1.0, sampling_ratio, aligned)
            np.testing.assert_allclose(output, expected, atol=1e-6)


# --- Spatial pyramid pooling ----------------------------------------------------------


@pytest.mark.parametrize("level", [1, 2, 4])
@pytest.mark.parametrize("size", range(5, 21))
def test_spatial_pyramid_bins_cover_the_axis(size, level):
    starts, ends = spatial_pyramid_bins(size, level)
    assert len(starts) == level
    assert starts[0] == 0 and ends[-1] == size
    assert np.all(ends > starts)
    assert np.all(starts[1:] <= ends[:-1])  # no gaps between neighbours
    np.testing.assert_array_equal(starts, [math.floor(i * size / level) for i in range(level)])
    np.testing.assert_array_equal(ends, [math.ceil((i + 1) * size / level) for i in range(level)])


def reference_spp(features, levels):
    batch, height, width, channels = features.shape
    pooled = []
    for level in levels:
        rows, cols = spatial_pyramid_bins(height, level), spatial_pyramid_bins(width, level)
        grid = np.zeros((batch, level, level, channels), np.float32)
        for i in range(level):
            for j in range(level):
                window = features[:, rows[0][i] : rows[1][i], cols[0][j] : cols[1][j]]
                grid[:, i, j] = window.max(axis=(1, 2))
        pooled.append(grid.reshape(batch, -1))
    return np.concatenate(pooled, axis=1)


@pytest.mark.parametrize(("height", "width"), [(5, 7), (13, 6), (20, 20)])
def test_spp_on_whole_maps_matches_reference(height, width):
    rng = np.random.default_rng(height * width)
    features = rng.normal(size=(2, height, width, 3)).astype(np.float32)
    layer = SpatialPyramidPooling()
    output = layer(features).numpy()
    assert output.shape == (2, 21 * 3)
    np.testing.assert_array_equal(output, reference_spp(features, (4, 2, 1)))
    output = SpatialPyramidPooling((6, 3, 2, 1))(features).numpy()
    np.testing.assert_array_equal(output, reference_spp(features, (6, 3, 2, 1)))


def test_spp_with_rois_is_roi_pooling_per_level():
    rng = np.random.default_rng(6)
    features = rng.normal(size=(2, 9, 10, 3)).astype(np.float32)
    rois = random_rois(rng, 15, 2, 9, 10, 0.5)
    output = SpatialPyramidPooling((3, 1), spatial_scale=0.5)(features, rois).numpy()
    expected = np.concatenate(
        [reference_roi_pool(features, rois, (n, n), 0.5)[0].reshape(15, -1) for n in (3, 1)], 1
    )
    np.testing.assert_array_equal(output, expected)


def test_spp_gradient_goes_to_each_bins_argmax():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(1, 6, 5, 2)).astype(np.float32)
    upstream = rng.normal(size=(1, 5 * 2)).astype(np.float32)
    _, gradient = gradient_of(
        lambda f, _: SpatialPyramidPooling((2, 1))(f), features, None, upstream
    )
    expected = np.zeros_like(features)
    rows, cols = spatial_pyramid_bins(6, 2), spatial_pyramid_bins(5, 2)
    bins = [(rows[0][i], rows[1][i], cols[0][j], cols[1][j]) for i in range(2) for j in range(2)]
    for number, (h0, h1, w0, w1) in enumerate([*bins, (0, 6, 0, 5)]):
        for c in range(2):
            window = features[0, h0:h1, w0:w1, c]
            h, w = np.unravel_index(window.argmax(), window.shape)
            expected[0, h0 + h, w0 + w, c] += upstream[0, number * 2 + c]
    np.testing.assert_allclose(gradient, expected, rtol=1e-6)


# --- Graph modes, shapes, serialization, validation -----------------------------------


def all_layers():
    return [
        RoIPooling(3, 0.5),
        RoIAlign(3, 0.5, 2, True),
        RoIAlign(2, 0.5),
        SpatialPyramidPooling(),
    ]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_layers_in_tf_function_match_eager(jit_compile):
    rng = np.random.default_rng(8)
    features = rng.normal(size=(2, 8, 9, 3)).astype(np.float32)
    rois = random_rois(rng, 12, 2, 8, 9, 0.5)
    for layer in all_layers():

        def forward_backward(features, rois, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(features)
                output = layer(features, rois)
                loss = tf.reduce_sum(tf.square(output))
            return output, tape.gradient(loss, features)

        compiled = tf.function(forward_backward, jit_compile=jit_compile)
        eager = forward_backward(tf.constant(features), tf.constant(rois))
        graph = compiled(tf.constant(features), tf.constant(rois))
        for got, want in zip(graph, eager, strict=True):
            np.testing.assert_allclose(
                tf.convert_to_tensor(got).numpy(),
                tf.convert_to_tensor(want).numpy(),
                rtol=1e-5,
                atol=1e-5,
            )


def test_zero_rois_give_empty_outputs():
    features = np.ones((2, 5, 6, 3), np.float32)
    rois = np.zeros((0, 5), np.float32)
    for layer in (RoIPooling(2), RoIAlign((2, 3), 1.0, -1), RoIAlign(2, 1.0, 2)):
        output, gradient = gradient_of(
            layer, features, rois, np.zeros((0, *layer.pool_size, 3), np.float32)
        )
        assert output.shape == (0, *layer.pool_size, 3)
        np.testing.assert_array_equal(gradient, 0.0)
    assert SpatialPyramidPooling()(features, rois).shape == (0, 21 * 3)


def test_a_model_with_the_layers_saves_and_loads(tmp_path):
    features = keras.Input((8, 9, 3), name="features")
    rois = keras.Input((5,), name="rois")
    pooled = keras.layers.Flatten()(RoIPooling((2, 3), 0.5)(features, rois))
    aligned = keras.layers.Flatten()(RoIAlign(2, 0.5, 2, aligned=True)(features, rois))
    pyramid = SpatialPyramidPooling((2, 1), spatial_scale=0.5)(features, rois)
    merged = keras.layers.Concatenate()([pooled, aligned, pyramid])
    model = keras.Model([features, rois], keras.layers.Dense(4)(merged))
    rng = np.random.default_rng(9)
    inputs = [
        rng.normal(size=(2, 8, 9, 3)).astype(np.float32),
        random_rois(rng, 7, 2, 8, 9, 0.5),
    ]
    path = tmp_path / "roi_model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(model(inputs).numpy(), restored(inputs).numpy())
    layers = {type(layer).__name__: layer for layer in restored.layers}
    assert layers["RoIAlign"].get_config()["aligned"] is True
    assert layers["SpatialPyramidPooling"].levels == (2, 1)


def test_graph_mode_clips_out_of_range_batch_indices():
    rng = np.random.default_rng(10)
    features = tf.constant(rng.normal(size=(2, 5, 5, 2)).astype(np.float32))
    layer = RoIPooling(2)
    traced = tf.function(layer)
    bad = tf.constant([[7, 0, 0, 4, 4], [-3, 0, 0, 4, 4]], tf.float32)
    clipped = tf.constant([[1, 0, 0, 4, 4], [0, 0, 0, 4, 4]], tf.float32)
    np.testing.assert_array_equal(traced(features, bad).numpy(), layer(features, clipped).numpy())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RoIPooling(0), r"^pool_size=0: expected an integer >= 1 or a pair of them$"),
        (lambda: RoIPooling((2, -1)), r"^pool_size=\(2, -1\): expected an integer >= 1"),
        (
            lambda: RoIPooling(2, spatial_scale=0),
            r"^spatial_scale=0: expected a finite number in \(0",
        ),
        (lambda: RoIAlign(2, -0.5), r"^spatial_scale=-0.5: expected a finite number in \(0"),
        (
            lambda: RoIAlign(2, 1.0, sampling_ratio=1.5),
            r"^sampling_ratio=1.5: expected an integer \(<= 0 for adaptive\)$",
        ),
        (lambda: SpatialPyramidPooling(levels=()), r"^levels=\(\): expected a non-empty list"),
        (lambda: SpatialPyramidPooling(levels=(2, 0)), r"^levels=\(2, 0\): expected a non-empty"),
        (
            lambda: SpatialPyramidPooling(spatial_scale=float("nan")),
            r"^spatial_scale=nan: expected",
        ),
    ],
)
def test_bad_arguments_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_inputs_are_rejected_naming_layer_argument_and_expectation():
    features = np.zeros((2, 4, 4, 1), np.float32)
    rois = np.array([[0, 0, 0, 2, 2]], np.float32)
    layer = RoIPooling(2)
    with pytest.raises(
        ValueError,
        match=r"RoIPooling: features has shape \(4, 4, 1\): expected rank 4 \[batch, height",
    ):
        layer(features[0], rois)
    with pytest.raises(
        ValueError, match=r"RoIPooling: rois has shape \(1, 4\): expected \[R, 5\] rows"
    ):
        layer(features, rois[:, :4])
    with pytest.raises(
        ValueError,
        match=r"RoIAlign: rois\[1, 0\]=2.0: expected an integer batch index in \[0, 2\)",
    ):
        RoIAlign(2)(features, np.array([[1, 0, 0, 2, 2], [2, 0, 0, 2, 2]], np.float32))
    with pytest.raises(ValueError, match=r"SpatialPyramidPooling: rois\[0, 0\]=0.5: expected"):
        SpatialPyramidPooling()(features, np.array([[0.5, 0, 0, 2, 2]], np.float32))
    unknown_size = tf.function(
        layer, input_signature=[tf.TensorSpec((None, None, None, 1)), tf.TensorSpec((None, 5))]
    )
    with pytest.raises(
        ValueError,
        match=r"features has shape \(None, None, None, 1\): expected a known height, width",
    ):
        unknown_size(features, rois)


def test_mixed_precision_pools_float16_features_and_keeps_rois_in_float32():
    rng = np.random.default_rng(11)
    features = rng.normal(size=(1, 6, 7, 2)).astype(np.float16)
    # In float16, x1 = 1535 becomes 1536, which rounds to column 2 instead of 1.
    rois = np.array([[0, 1535, 0, 6000, 5000]], np.float32)
    for layer in (RoIPooling(2, 1 / 1024, dtype="mixed_float16"), RoIAlign(2, 1 / 1024, 2)):
        output = layer(tf.constant(features), rois)
        assert output.dtype == tf.float16
    pooled = RoIPooling(2, 1 / 1024, dtype="mixed_float16")(tf.constant(features), rois)
    expected, _ = reference_roi_pool(features.astype(np.float32), rois, (2, 2), 1 / 1024)
    np.testing.assert_array_equal(pooled.numpy().astype(np.float32), expected)

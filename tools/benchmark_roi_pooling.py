"""Benchmark RoI max pooling forward + backward and print a Markdown table.

Compares ``utils.layers.RoIPooling`` with (a) a Python loop over RoIs and bins of
TensorFlow ops (the usual hand-written Keras RoI pooling, run eagerly) and (b)
``tf.image.crop_and_resize`` to 14 x 14 followed by 2 x 2 max pooling (the TF Object
Detection API's approximation, which is not RoI pooling). Default size: 2 images of
38 x 50 x 512 features (a VGG16 conv5 map of 600 x 800 images), 300 RoIs, 7 x 7 output.

Run from the repository root: ``python tools/benchmark_roi_pooling.py``.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from utils.layers import RoIAlign, RoIPooling  # noqa: E402

BATCH, HEIGHT, WIDTH, CHANNELS = 2, 38, 50, 512
POOL, SCALE = 7, 1 / 16


def make_inputs(rois, seed=0):
    """Random features, proposal-like RoIs (16 px to the whole 600 x 800 image) and head."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(BATCH, HEIGHT, WIDTH, CHANNELS)).astype(np.float32)
    image_h, image_w = HEIGHT / SCALE, WIDTH / SCALE
    w = np.exp(rng.uniform(np.log(16), np.log(image_w), rois))
    h = np.clip(w * np.exp(rng.uniform(-1, 1, rois)), 16, image_h)
    x1, y1 = rng.uniform(0, image_w - w), rng.uniform(0, image_h - h)
    batch_index = rng.integers(0, BATCH, rois)
    boxes = np.stack([batch_index, x1, y1, x1 + w, y1 + h], axis=1).astype(np.float32)
    head = rng.normal(size=(rois, POOL, POOL, CHANNELS)).astype(np.float32)
    return tf.constant(features), tf.constant(boxes), tf.constant(head)


def with_gradient(pool, head):
    """``pool(features, rois)`` and the features' gradient through a linear read-out.

    The read-out stands for the fully connected head that follows RoI pooling: what
    flows back into the pooling is a materialized tensor, as from a ``Dense`` layer.
    """

    def run(features, rois):
        with tf.GradientTape() as tape:
            tape.watch(features)
            pooled = pool(features, rois)
            loss = tf.reduce_sum(pooled * head)
        return pooled, tape.gradient(loss, features)

    return run


def loop_roi_pool(features, rois):
    """Exact RoI pooling, one RoI and one bin at a time (eager TensorFlow ops)."""
    outputs = []
    for roi in rois.numpy():
        b = int(roi[0])
        # float32 arithmetic, as Fast R-CNN's and torchvision's kernels.
        x0, y0, x1, y1 = (int(np.floor(v * np.float32(SCALE) + 0.5)) for v in roi[1:])
        bin_h = np.float32(max(y1 - y0 + 1, 1)) / np.float32(POOL)
        bin_w = np.float32(max(x1 - x0 + 1, 1)) / np.float32(POOL)
        rows = []
        for ph in range(POOL):
            h0 = min(max(int(np.floor(np.float32(ph) * bin_h)) + y0, 0), HEIGHT)
            h1 = min(max(int(np.ceil(np.float32(ph + 1) * bin_h)) + y0, 0), HEIGHT)
            cells = []
            for pw in range(POOL):
                w0 = min(max(int(np.floor(np.float32(pw) * bin_w)) + x0, 0), WIDTH)
                w1 = min(max(int(np.ceil(np.float32(pw + 1) * bin_w)) + x0, 0), WIDTH)
                if h1 <= h0 or w1 <= w0:
                    cells.append(tf.zeros([CHANNELS]))
                else:
                    cells.append(tf.reduce_max(features[b, h0:h1, w0:w1], axis=(0, 1)))
            rows.append(tf.stack(cells))
        outputs.append(tf.stack(rows))
    return tf.stack(outputs)


def crop_and_resize_pool(features, rois):
    """TF Object Detection API style: bilinear 14 x 14 crops, then 2 x 2 max pooling."""
    y1, x1 = rois[:, 2] * SCALE / (HEIGHT - 1), rois[:, 1] * SCALE / (WIDTH - 1)
    y2, x2 = rois[:, 4] * SCALE / (HEIGHT - 1), rois[:, 3] * SCALE / (WIDTH - 1)
    crops = tf.image.crop_and_resize(
        features, tf.stack([y1, x1, y2, x2], axis=1), tf.cast(rois[:, 0], tf.int32), (14, 14)
    )
    return tf.nn.max_pool2d(crops, 2, 2, "VALID")


def milliseconds(function, features, rois, repeats):
    """Median wall-clock and process CPU milliseconds per call, after one warm-up call.

    CPU time (all threads together) is the steadier number on a shared machine.
    """
    tf.nest.map_structure(lambda t: t.numpy(), function(features, rois))
    wall, cpu = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        tf.nest.map_structure(lambda t: t.numpy(), function(features, rois))
        wall.append((time.perf_counter() - wall_start) * 1000)
        cpu.append((time.process_time() - cpu_start) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--loop-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: TF's default)")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    features, rois, head = make_inputs(args.rois)
    layer = RoIPooling(POOL, SCALE)
    # The layer is exact: it matches the loop (which follows Fast R-CNN's kernel) bit for bit.
    np.testing.assert_array_equal(
        layer(features, rois).numpy(), loop_roi_pool(features, rois).numpy()
    )
    align = RoIAlign(POOL, SCALE, sampling_ratio=2, aligned=True)

    methods = [
        (
            "RoIPooling, tf.function(jit_compile=True)",
            tf.function(with_gradient(layer, head), jit_compile=True),
            args.repeats,
        ),
        ("RoIPooling, tf.function", tf.function(with_gradient(layer, head)), args.repeats),
        ("RoIPooling, eager", with_gradient(layer, head), args.repeats),
        (
            "(a) loop over RoIs and bins, eager",
            with_gradient(loop_roi_pool, head),
            args.loop_repeats,
        ),
        (
            "(b) crop_and_resize 14x14 + max pool, tf.function",
            tf.function(with_gradient(crop_and_resize_pool, head)),
            args.repeats,
        ),
        (
            "for reference: RoIAlign(sampling_ratio=2), jit",
            tf.function(with_gradient(align, head), jit_compile=True),
            args.repeats,
        ),
    ]
    timings = [(name, *milliseconds(run, features, rois, n)) for name, run, n in methods]
    reference = timings[0][1]
    threads = args.threads or f"default ({os.cpu_count()} CPUs)"
    print(
        f"RoI max pooling, forward + backward: {BATCH} x {HEIGHT} x {WIDTH} x {CHANNELS} "
        f"features, {args.rois} RoIs, {POOL} x {POOL} output; TensorFlow {tf.__version__}, "
        f"{platform.machine()}, intra-op threads {threads}; median of {args.repeats} calls "
        f"({args.loop_repeats} for the loop).\n"
    )
    print("| method | wall ms | CPU ms | wall / RoIPooling (jit) |")
    print("|---|---:|---:|---:|")
    for name, wall, cpu in timings:
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {wall / reference:.2f} |")


if __name__ == "__main__":
    main()

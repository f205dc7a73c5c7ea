"""Benchmark RoI max pooling forward + backward and print a Markdown table.

Compares ``utils.layers.RoIPooling`` (plain graph mode, XLA, eager) with
``tf.image.crop_and_resize`` to 14 x 14 followed by 2 x 2 max pooling in a
``tf.function`` (the TF Object Detection API's approximation, which is not RoI pooling
and has no XLA kernel on CPU), measured in the same process, calls interleaved, so that
the two ratios the course sets as targets are robust to a loaded machine:
RoIPooling in graph mode at most 2.0x crop_and_resize, under XLA at most 1.2x.
``--loop-rois N`` adds a Python loop over RoIs and bins of TensorFlow ops (the usual
hand-written Keras RoI pooling, eager) on the first N RoIs, scaled to all of them.
Default size: 2 images of 38 x 50 x 512 features (a VGG16 conv5 map of 600 x 800
images), 300 RoIs, 7 x 7 output. About a minute on a loaded 2-core machine.

Run from the repository root: ``python tools/benchmark_roi_pooling.py``.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from utils.layers import RoIAlign, RoIPooling, roi_pool_reference  # noqa: E402

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


def call_ms(function, features, rois):
    """Wall-clock milliseconds of one call, outputs fetched."""
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), function(features, rois))
    return (time.perf_counter() - start) * 1000


def quartiles(values):
    """``(median, lower quartile, upper quartile)``."""
    low, median, high = np.percentile(values, [25, 50, 75])
    return median, low, high


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds")
    parser.add_argument(
        "--loop-rois", type=int, default=0, help="RoIs for the eager loop (0: skip)"
    )
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: TF's default)")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    features, rois, head = make_inputs(args.rois)
    layer = RoIPooling(POOL, SCALE)
    # The layer is exact: it matches the library's readable loop bit for bit.
    np.testing.assert_array_equal(
        layer(features, rois).numpy(), roi_pool_reference(features, rois, POOL, SCALE)
    )
    align = RoIAlign(POOL, SCALE, sampling_ratio=2, aligned=True)
    methods = {
        "crop_and_resize 14x14 + 2x2 max pool, tf.function": tf.function(
            with_gradient(crop_and_resize_pool, head)
        ),
        "RoIPooling, tf.function": tf.function(with_gradient(layer, head)),
        "RoIPooling, tf.function(jit_compile=True)": tf.function(
            with_gradient(layer, head), jit_compile=True
        ),
        "RoIPooling, eager": with_gradient(layer, head),
        "for reference: RoIAlign(sampling_ratio=2), jit": tf.function(
            with_gradient(align, head), jit_compile=True
        ),
    }
    for run in methods.values():  # trace, compile and warm up
        call_ms(run, features, rois)
        call_ms(run, features, rois)
    times = {name: [] for name in methods}
    for _ in range(args.repeats):  # interleaved, so that load changes hit all alike
        for name, run in methods.items():
            times[name].append(call_ms(run, features, rois))
    if args.loop_rois:
        subset = rois[: args.loop_rois]
        loop = with_gradient(loop_roi_pool, head[: args.loop_rois])
        times[f"loop over RoIs and bins, eager (x {args.rois}/{args.loop_rois})"] = [
            call_ms(loop, features, subset) * args.rois / args.loop_rois
        ]

    crop = np.array(times["crop_and_resize 14x14 + 2x2 max pool, tf.function"])
    threads = args.threads or f"TF's default ({os.cpu_count()} CPUs)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"RoI max pooling, forward + backward: {BATCH} x {HEIGHT} x {WIDTH} x {CHANNELS} "
        f"features, {args.rois} RoIs, {POOL} x {POOL} output. TensorFlow {tf.__version__}, "
        f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
        f"intra-op threads {threads}, load average {load:.1f} at the end; "
        f"{args.repeats} interleaved rounds.\n"
    )
    print("| method | median ms | quartiles ms | / crop_and_resize (median, quartiles) |")
    print("|---|---:|---:|---:|")
    ratios = {}
    for name, values in times.items():
        median, low, high = quartiles(values)
        if len(values) == len(crop):
            ratio = quartiles(np.array(values) / crop)
            ratios[name] = ratio[0]
            relative = f"{ratio[0]:.2f} ({ratio[1]:.2f}-{ratio[2]:.2f})"
        else:
            relative = f"{median / np.median(crop):.0f}"
        print(f"| {name} | {median:.1f} | {low:.1f}-{high:.1f} | {relative} |")
    print()
    for label, name, target in (
        ("graph mode", "RoIPooling, tf.function", 2.0),
        ("XLA", "RoIPooling, tf.function(jit_compile=True)", 1.2),
    ):
        verdict = "meets" if ratios[name] <= target else "MISSES"
        print(
            f"{label}: RoIPooling / crop_and_resize = {ratios[name]:.2f} "
            f"(median of per-round ratios), target <= {target}: {verdict} the target"
        )


if __name__ == "__main__":
    main()

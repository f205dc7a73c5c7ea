"""Residual blocks, deep plain/residual CNNs and the course's small ResNet.

A residual block computes ``relu(F(x) + shortcut(x))``: the block only has to learn
the change ``F(x)`` to its input (He et al., 2016, "Deep residual learning for image
recognition"). The shortcut is the identity when the shape is kept and a 1x1
convolution with the block's stride (a *projection*, the paper's option B) when the
block changes the channel count or the resolution. Layers are channels-last.
Introduced in notebook 04.
"""

from __future__ import annotations

import keras
import numpy as np


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name}={value!r}: expected a positive integer")


def residual_block(x, filters: int, *, stride: int = 1, shortcut: bool = True, name: str):
    """A basic residual block (two 3x3 convolutions), applied to the tensor ``x``.

    Main path: conv3x3(stride) - BN - ReLU - conv3x3 - BN. With ``shortcut=True`` the
    block's input is added before the last ReLU: unchanged (identity shortcut) when
    ``stride == 1`` and the channel count stays ``filters``, else through a 1x1
    convolution with ``stride`` and BN (projection shortcut). With ``shortcut=False``
    it is the same two convolutions without the addition: a *plain* block, for
    comparing like with like. Layer names start with ``name``; the output layer is
    ``name + "_out"``. Introduced in notebook 04.
    """
    _check_positive("filters", filters)
    if stride not in (1, 2):
        raise ValueError(f"stride={stride!r}: expected 1 or 2")
    conv = {"padding": "same", "use_bias": False, "kernel_initializer": "he_normal"}
    y = keras.layers.Conv2D(filters, 3, strides=stride, name=f"{name}_conv1", **conv)(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, name=f"{name}_conv2", **conv)(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    if shortcut:
        if stride != 1 or x.shape[-1] != filters:
            x = keras.layers.Conv2D(filters, 1, strides=stride, name=f"{name}_proj", **conv)(x)
            x = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(x)
        y = keras.layers.Add(name=f"{name}_add")([y, x])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def build_deep_cnn(
    depth: int,
    *,
    residual: bool,
    widths: tuple[int, ...] = (16, 32, 64),
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 5,
) -> keras.Model:
    """A CIFAR-style ResNet (He et al., sec. 4.2) or its plain twin, ``depth`` weight layers.

    ``depth = 6n + 2``: a 3x3 stem convolution, ``len(widths)`` stages of ``n`` blocks
    (two 3x3 convolutions each; every stage after the first halves the resolution and
    moves to the next width) and a dense classifier after global average pooling. With
    ``residual=False`` the blocks have no shortcuts (the same convolutions, minus the
    two 1x1 projections). Input: floats already scaled to [0, 1]. Introduced in
    notebook 04.
    """
    stages = len(widths)
    if isinstance(depth, bool) or not isinstance(depth, int) or (depth - 2) % (2 * stages):
        raise ValueError(f"depth={depth!r}: expected {2 * stages}n + 2 weight layers (n >= 1)")
    blocks_per_stage = (depth - 2) // (2 * stages)
    if blocks_per_stage < 1:
        raise ValueError(f"depth={depth!r}: expected at least {2 * stages + 2} weight layers")
    kind = "residual" if residual else "plain"
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(
        widths[0], 3, padding="same", use_bias=False, kernel_initializer="he_normal", name="stem"
    )(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate(widths, start=1):
        for block in range(1, blocks_per_stage + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            name = f"stage{stage}_block{block}"
            x = residual_block(x, filters, stride=stride, shortcut=residual, name=name)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"{kind}_{depth}")


def build_small_resnet(
    *,
    stem_width: int = 24,
    stage_widths: tuple[int, ...] = (32, 64, 128),
    stage_strides: tuple[int, ...] = (2, 2, 1),
    num_classes: int = 5,
    name: str = "small_resnet",
) -> keras.Model:
    """A small, fully convolutional ResNet classifier for RGB pixel images (0..255).

    ``Rescaling(1/255)`` is the first layer, so the model takes uint8 (or float) pixels
    of any size ``[B, H, W, 3]``. A stride-2 3x3 stem, then one residual block per
    stage (``stage<i>_*`` layers), an ``Identity`` layer named ``"features"`` (the
    feature map, stride ``2 * prod(stage_strides)``), global average pooling and a
    softmax ``Dense`` named ``"classifier"``. The course backbone (``utils.backbone``)
    is this model trained on shapes. Introduced in notebook 04.
    """
    _check_positive("stem_width", stem_width)
    _check_positive("num_classes", num_classes)
    if len(stage_widths) != len(stage_strides) or not stage_widths:
        raise ValueError(
            f"stage_widths={stage_widths!r}, stage_strides={stage_strides!r}: expected two "
            "non-empty sequences of the same length"
        )
    inputs = keras.Input((None, None, 3), name="image")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = keras.layers.Conv2D(
        stem_width,
        3,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name="stem_conv",
    )(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, (filters, stride) in enumerate(
        zip(stage_widths, stage_strides, strict=True), start=1
    ):
        x = residual_block(x, filters, stride=stride, name=f"stage{stage}")
    features = keras.layers.Identity(name="features")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


def conv_gradient_norms(model: keras.Model, images, labels) -> dict[str, float]:
    """L2 norm of the loss gradient for every ``Conv2D`` kernel, input side first.

    The loss is the mean sparse categorical cross-entropy of ``model`` (softmax
    outputs) on one batch, with BatchNorm in training mode as during ``fit``. Small
    norms in the first layers mean they barely learn; very large ones mean unstable
    steps. Introduced in notebook 04.
    """
    import tensorflow as tf  # GradientTape: Keras 3 has no backend-neutral gradient call

    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convolutions:
        raise ValueError(f"model={model.name!r}: expected at least one Conv2D layer")
    kernels = [layer.kernel for layer in convolutions]
    with tf.GradientTape() as tape:
        probabilities = model(images, training=True)
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities))
    gradients = tape.gradient(loss, kernels)
    return {
        layer.name: float(keras.ops.sqrt(keras.ops.sum(keras.ops.square(gradient))))
        for layer, gradient in zip(convolutions, gradients, strict=True)
    }


def train_depth_run(
    depth: int,
    *,
    residual: bool,
    images,
    labels,
    probe: tuple,
    epochs: int,
    seed: int,
    widths: tuple[int, ...] = (8, 16, 32),
    batch_size: int = 64,
    learning_rate: float = 1e-3,
) -> dict:
    """Train one ``build_deep_cnn`` network with Adam and measure it, for the degradation
    experiment: ``{"history", "start", "end", "seconds"}``, where ``start`` and ``end`` are
    ``conv_gradient_norms`` on the ``probe = (images, labels)`` batch before and after
    training. Seeds the global generators with ``seed`` first. Introduced in notebook 04.
    """
    import time

    _check_positive("epochs", epochs)
    keras.utils.set_random_seed(seed)
    model = build_deep_cnn(depth, residual=residual, widths=widths)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    at_start = conv_gradient_norms(model, *probe)
    start = time.perf_counter()
    history = model.fit(images, labels, batch_size=batch_size, epochs=epochs, verbose=0).history
    seconds = time.perf_counter() - start
    return {
        "history": history,
        "start": at_start,
        "end": conv_gradient_norms(model, *probe),
        "seconds": seconds,
    }


def degradation_report(runs: dict, depths, seeds) -> tuple[str, list[str]]:
    """The degradation experiment's table and verdict lines from ``train_depth_run`` results.

    ``runs[depth, kind, seed]`` for ``kind`` in ("plain", "residual"). The table: final
    training loss and accuracy as mean ± std over ``seeds``, and the stem's gradient norm
    at the start and the end (means). The verdicts compare final losses with a Welch
    interval over the seeds (``utils.uncertainty.seed_difference``): plain vs residual at
    every depth, then every plain network vs the next shallower one; "tied" when the
    interval covers zero, else which one is higher. Introduced in notebook 04.
    """
    from utils.uncertainty import format_mean_std, seed_difference

    depths, seeds = list(depths), list(seeds)
    missing = [
        (d, k, s)
        for d in depths
        for k in ("plain", "residual")
        for s in seeds
        if (d, k, s) not in runs
    ]
    if missing:
        raise ValueError(f"runs lacks {missing[:3]}: expected every (depth, kind, seed)")

    def over_seeds(depth, kind, value):
        return {seed: value(runs[depth, kind, seed]) for seed in seeds}

    loss = {}
    lines = [
        f"{'network':12s} {'final loss':>24s} {'accuracy':>24s} "
        f"{'stem gradient: start':>21s} {'end':>7s}"
    ]
    for depth in depths:
        for kind in ("plain", "residual"):
            loss[depth, kind] = over_seeds(depth, kind, lambda r: r["history"]["loss"][-1])
            accuracy = over_seeds(depth, kind, lambda r: r["history"]["accuracy"][-1])
            start = np.mean(list(over_seeds(depth, kind, lambda r: r["start"]["stem"]).values()))
            end = np.mean(list(over_seeds(depth, kind, lambda r: r["end"]["stem"]).values()))
            lines.append(
                f"{kind:8s} {depth:2d}  {format_mean_std(loss[depth, kind]):>24s} "
                f"{format_mean_std(accuracy):>24s} {start:21.3g} {end:7.3g}"
            )

    def compare(a, b) -> str:
        difference = seed_difference(loss[a], loss[b])
        name_a, name_b = (f"{kind} {depth}" for depth, kind in (a, b))
        higher = name_a if difference.observed > 0 else name_b
        verdict = "tied" if difference.covers_zero else f"{higher} higher"
        return (
            f"final loss, {name_a} - {name_b}: {difference.observed:+.3f}, 95% interval "
            f"[{difference.low:+.3f}, {difference.high:+.3f}] -> {verdict}"
        )

    verdicts = [compare((depth, "plain"), (depth, "residual")) for depth in depths]
    verdicts += [
        compare((deep, "plain"), (shallow, "plain"))
        for shallow, deep in zip(depths, depths[1:], strict=False)
    ]
    return "\n".join(lines), verdicts

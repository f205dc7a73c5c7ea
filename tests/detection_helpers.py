"""Helpers the detector tests share: tiny detection images, a tiny stand-in backbone and the
cached-loader check."""

import keras
import numpy as np

from utils.shapes import make_shapes

TINY_CLASSES = ("circle", "square", "triangle")
TINY_IMAGE_SIZE = 64
TIMING_KEYS = {"backbone", "head", "postprocess", "total", "detection", "proposals_per_image"}
"""What ``detect_images`` of Fast R-CNN and the one-stage detector time (``utils.profiling``)."""


def tiny_anchor_settings(stride: int) -> dict:
    """Feature stride, image size and two anchor sizes x three ratios for the tiny images."""
    return {
        "feature_stride": stride,
        "image_size": (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE),
        "anchor_sizes": (12, 24),
        "anchor_ratios": (0.5, 1.0, 2.0),
    }


def tiny_detection_images(count: int):
    """``count`` 64x64 detection images of ``TINY_CLASSES`` with one or two objects each."""
    return make_shapes(
        "detection",
        count,
        image_size=TINY_IMAGE_SIZE,
        difficulty="easy",
        seed=3,
        classes=TINY_CLASSES,
        min_objects=1,
        max_objects=2,
    )


def make_tiny_backbone(stride: int = 4, channels: int = 8) -> keras.Model:
    """A stand-in for the course backbone: stride-2 convolutions down to ``stride``."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for _ in range(int(stride).bit_length() - 1):
        x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inputs, x, name="tiny_backbone")


def check_cached_loader(load, folder, capsys, outputs):
    """A detector loader trains on a miss, then loads a model giving the same outputs.

    ``load(**options)`` is the loader, ``outputs(model)`` a list of arrays to compare.
    Returns the ``TrainingInfo`` of the first call.
    """
    model, info = load(mode="fast")
    assert info.source == "trained" and info.path.exists() and info.path.parent == folder
    assert "-fast-" in info.path.name and info.mode == "fast"
    assert "training on" in capsys.readouterr().out
    loaded, loaded_info = load(mode="fast")
    assert loaded_info.source == "cache" and "loaded from" in capsys.readouterr().out
    assert loaded_info.history == info.history
    for first, second in zip(outputs(model), outputs(loaded), strict=True):
        np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)
    return info

"""One augmentation recipe, two implementations: ``ImageDataGenerator`` and preprocessing layers.

Data augmentation makes new training images of the same class by random,
label-preserving changes (introduced in notebook 03). :class:`AugmentationRecipe`
holds the ranges once and builds both the legacy ``ImageDataGenerator`` (NumPy and
SciPy on the CPU, one image at a time, in Python) and the Keras 3 preprocessing
layers (TensorFlow ops, a batch at a time, inside a model or a ``tf.data`` pipeline,
active only when ``training=True``), so the two ways can be compared on equal terms.

:func:`image_sharpness` measures one side effect: every resampling step blurs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FILL_MODES = ("reflect", "nearest", "constant", "wrap")
"""How pixels moved in from outside the image are filled; both implementations know these."""
INTERPOLATIONS = ("bilinear", "nearest")


def _nth(seed: int | None, position: int) -> int | None:
    """The seed of the layer at ``position``: distinct seeds, so the layers draw independently."""
    return None if seed is None else seed + position


def _check_fraction(name: str, value, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
        raise ValueError(f"{name}={value!r}: expected a number in [0, {high}]")


@dataclasses.dataclass(frozen=True)
class AugmentationRecipe:
    """Random geometry that keeps the label: rotation, shift, zoom and a left-right flip.

    - ``rotation_degrees``: rotate by an angle drawn uniformly from ``[-r, r]`` degrees.
    - ``shift_fraction``: shift by up to this fraction of the width and of the height.
    - ``zoom_fraction``: scale each axis on its own by a factor in ``[1 - z, 1 + z]``.
    - ``horizontal_flip``: mirror left-right half of the time.
    - ``fill_mode``: one of ``FILL_MODES``.

    A zero range switches that transformation off.
    """

    rotation_degrees: float = 20.0
    shift_fraction: float = 0.1
    zoom_fraction: float = 0.15
    horizontal_flip: bool = True
    fill_mode: str = "reflect"

    def __post_init__(self):
        _check_fraction("rotation_degrees", self.rotation_degrees, 180.0)
        _check_fraction("shift_fraction", self.shift_fraction, 1.0)
        _check_fraction("zoom_fraction", self.zoom_fraction, 0.99)
        if not isinstance(self.horizontal_flip, bool):
            raise ValueError(f"horizontal_flip={self.horizontal_flip!r}: expected True or False")
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode={self.fill_mode!r}: expected one of {FILL_MODES}")

    def image_data_generator(self, **options):
        """The recipe as a legacy ``ImageDataGenerator`` (``tf.keras.preprocessing.image``).

        ``options`` are passed on (e.g. ``brightness_range``, ``rescale``) and may not
        repeat the recipe's own settings.
        """
        import tensorflow as tf

        settings = {
            "rotation_range": self.rotation_degrees,
            "width_shift_range": self.shift_fraction,
            "height_shift_range": self.shift_fraction,
            "zoom_range": self.zoom_fraction,
            "horizontal_flip": self.horizontal_flip,
            "fill_mode": self.fill_mode,
        }
        repeated = sorted(set(settings) & set(options))
        if repeated:
            raise ValueError(
                f"options {repeated}: expected only settings the recipe does not set itself"
            )
        return tf.keras.preprocessing.image.ImageDataGenerator(**settings, **options)

    def preprocessing_layers(
        self, seed: int | None = None, *, interpolation: str = "bilinear", name="augmentation"
    ):
        """The recipe as Keras preprocessing layers in a ``keras.Sequential``.

        ``RandomFlip``, ``RandomRotation``, ``RandomTranslation``, ``RandomZoom``, in that
        order; each layer resamples the image on its own. Each layer gets its own seed
        (``seed + position``): layers with equal seeds would draw equal random numbers,
        tying the angle to the shift. The layers change images only when called with
        ``training=True`` (``fit`` does); otherwise they return their input unchanged.
        """
        import keras

        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed={seed!r}: expected a non-negative integer or None")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation={interpolation!r}: expected one of {INTERPOLATIONS}")
        geometry = {"fill_mode": self.fill_mode, "interpolation": interpolation}
        zoom = (-self.zoom_fraction, self.zoom_fraction)
        layers = []
        if self.horizontal_flip:
            layers.append(keras.layers.RandomFlip("horizontal", seed=_nth(seed, len(layers))))
        if self.rotation_degrees:
            factor = self.rotation_degrees / 360  # RandomRotation: a fraction of a full turn
            layers.append(
                keras.layers.RandomRotation(factor, seed=_nth(seed, len(layers)), **geometry)
            )
        if self.shift_fraction:
            shift = self.shift_fraction
            layers.append(
                keras.layers.RandomTranslation(
                    shift, shift, seed=_nth(seed, len(layers)), **geometry
                )
            )
        if self.zoom_fraction:
            layers.append(
                keras.layers.RandomZoom(zoom, zoom, seed=_nth(seed, len(layers)), **geometry)
            )
        return keras.Sequential(layers or [keras.layers.Identity()], name=name)


def image_sharpness(images: np.ndarray) -> float:
    """Mean absolute Laplacian of the grey images ``[N, H, W, C]`` or ``[N, H, W]``: lower is blurrier.

    The 4-neighbour Laplacian over interior pixels, averaged over pixels and images, in
    the images' own units (grey levels for 0..255 images).
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 4:
        images = images.mean(axis=-1)
    if images.ndim != 3 or min(images.shape[1:]) < 3:
        raise ValueError(
            f"images has shape {images.shape}: expected [N, H, W] or [N, H, W, C] with H, W >= 3"
        )
    centre = images[:, 1:-1, 1:-1]
    laplacian = (
        4 * centre
        - images[:, :-2, 1:-1]
        - images[:, 2:, 1:-1]
        - images[:, 1:-1, :-2]
        - images[:, 1:-1, 2:]
    )
    return float(np.abs(laplacian).mean())

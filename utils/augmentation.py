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


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    """One trained variant: the model, Keras' history dict and the median seconds per epoch."""

    model: object
    history: dict
    seconds_per_epoch: float


def train_variant(build, inputs, validation_data, *, epochs: int, seed: int, **fit_options):
    """Seed, build, compile and fit one variant of the augmentation experiment.

    ``build()`` returns an uncompiled classifier (softmax output, integer labels); it is
    compiled with Adam, sparse categorical cross-entropy and accuracy, then fitted on
    ``inputs`` (an array with ``y=`` in ``fit_options``, a ``PyDataset`` such as
    ``datagen.flow(...)``, or a ``tf.data`` dataset) for ``epochs``, validating on
    ``validation_data = (x_val, y_val)``. ``keras.utils.set_random_seed(seed)`` comes
    first, so a variant repeats itself. Seconds per epoch are the median epoch (robust to
    the first epoch's tracing and to bursts of other work), validation included.
    Returns a ``TrainingRun``. Introduced in notebook 03.
    """
    import time

    import keras

    from utils.checks import check_count

    epochs = check_count("epochs", epochs)
    seed = check_count("seed", seed, minimum=0)
    if not callable(build):
        raise ValueError(f"build={build!r}: expected a function that returns a new model")
    keras.utils.set_random_seed(seed)
    model = build()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stamps = [time.perf_counter()]
    clock = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda *_: stamps.append(time.perf_counter())
    )
    history = model.fit(
        inputs,
        validation_data=validation_data,
        epochs=epochs,
        verbose=0,
        callbacks=[clock],
        **fit_options,
    )
    return TrainingRun(model, history.history, float(np.median(np.diff(stamps))))


def overfitting_summary(run: TrainingRun, x_train, y_train) -> dict[str, float]:
    """Clean train accuracy, last and best validation accuracy and the gap of one run.

    Keras' own training accuracy is measured on the (augmented) batches it trained on;
    here the model is evaluated on the clean training images, so ``gap`` = clean train
    accuracy - last validation accuracy is the overfitting gap. Introduced in notebook 03.
    """
    clean_train = float(run.model.evaluate(x_train, y_train, verbose=0)[1])
    validation = run.history["val_accuracy"]
    return {
        "train": clean_train,
        "validation": float(validation[-1]),
        "gap": clean_train - float(validation[-1]),
        "best validation": float(max(validation)),
    }

"""Transfer learning on the course backbone: a new task, new heads, fine-tuning, baselines.

The new task is one the backbone never saw: *how many* shapes an image holds (1 to
``max_objects``), from the same generator (``utils.shapes``, detection variant), while the
backbone was trained to name the one shape of an image. Its own 5-class head cannot answer
that, so whatever a new head reaches is learned from the new labels.

Conventions:
- images are uint8 RGB ``[N, H, W, 3]`` (the course backbone rescales them itself);
  labels are int32 class indices into ``class_names`` (``"1"``, ``"2"``, ...);
- a frozen feature extractor always runs in inference mode (``training=False``): its
  BatchNorm layers use the moving statistics learned on the old task, also after its
  top stage is unfrozen for fine-tuning (a few new images would otherwise overwrite them);
- accuracies are measured in inference mode (``model.predict``), the same way for training
  and validation images, so a "training accuracy" is comparable to the validation one.

Introduced in notebook 05.
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np

from utils.checks import check_count, check_positive, check_same_length, fail
from utils.course import quiet_tensorflow_logs
from utils.shapes import make_shapes_split


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledImages:
    """Images and one class label each: uint8 ``[N, H, W, 3]`` and int32 ``[N]``."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)


def make_count_task(
    num_train: int,
    num_validation: int,
    *,
    max_objects: int = 4,
    image_size: int = 96,
    difficulty: str = "medium",
    seed: int = 0,
) -> tuple[LabelledImages, LabelledImages]:
    """``(train, validation)`` of the counting task: label = number of labelled shapes - 1.

    Detection-variant shapes images with 1..``max_objects`` objects; the count is the number
    of objects the generator labels (those at least half visible), so an almost hidden one
    does not count. Class names are ``"1" .. str(max_objects)``. Introduced in notebook 05.
    """
    check_count("num_train", num_train)
    check_count("num_validation", num_validation)
    check_count("max_objects", max_objects, minimum=2)
    train, validation = make_shapes_split(
        "detection",
        num_train,
        num_validation,
        image_size=image_size,
        difficulty=difficulty,
        min_objects=1,
        max_objects=max_objects,
        seed=seed,
    )
    names = tuple(str(count) for count in range(1, max_objects + 1))

    def counted(data) -> LabelledImages:
        labels = np.array([len(objects) - 1 for objects in data.labels], dtype=np.int32)
        return LabelledImages(data.images, labels, names)

    return counted(train), counted(validation)


def stage_extractor(classifier: keras.Model, layer_name: str) -> keras.Model:
    """A feature extractor sharing ``classifier``'s layers up to ``layer_name`` (its output)."""
    names = [layer.name for layer in classifier.layers]
    if layer_name not in names:
        fail("layer_name", layer_name, f"a layer of {classifier.name!r}, e.g. one of {names[-6:]}")
    return keras.Model(
        classifier.input, classifier.get_layer(layer_name).output, name=f"to_{layer_name}"
    )


def pooled_features(
    extractor: keras.Model, images, *, preprocess=None, size=None, batch_size: int = 50
) -> np.ndarray:
    """Frozen features ``[N, C]`` of ``extractor`` (inference mode), globally average-pooled.

    The "extract once, then train a head" path: with a frozen extractor the features of an
    image never change, so they are computed once and a head trains on them in seconds.
    ``size``: resize the images to ``(size, size)`` first; ``preprocess``: a function applied
    to the float32 pixels (e.g. ``keras.applications.resnet50.preprocess_input``). An
    extractor that pools itself (output ``[N, C]``) is used as it is.
    """
    check_count("batch_size", batch_size)
    pixels = np.asarray(images)
    if size is not None:
        check_count("size", size)
        pixels = keras.ops.convert_to_numpy(
            keras.ops.image.resize(pixels.astype("float32"), (size, size))
        )
    if preprocess is not None:
        pixels = preprocess(pixels.astype("float32"))
    features = _predict(extractor, pixels, batch_size)
    if features.ndim == 4:
        features = features.mean(axis=(1, 2))
    if features.ndim != 2:
        fail("extractor", extractor.name, "a model giving [N, H, W, C] maps or [N, C] features")
    return features


def build_head(num_features: int, num_classes: int) -> keras.Model:
    """A softmax layer on pooled features: the "new head" (``num_features * num_classes +
    num_classes`` weights), its ``Dense`` layer named ``"new_head"``."""
    check_count("num_features", num_features)
    check_count("num_classes", num_classes, minimum=2)
    inputs = keras.Input((num_features,), name="pooled_features")
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="new_head")(inputs)
    return keras.Model(inputs, outputs, name="head")


def with_head(features: keras.Model, head: keras.Model, *, frozen: bool) -> keras.Model:
    """``features`` + global average pooling + ``head``, end to end, on pixels of any size.

    ``frozen=True`` freezes ``features`` and calls it in inference mode (``training=False``),
    which stays so when some of its layers are unfrozen later (fine-tuning); with
    ``frozen=False`` everything trains and BatchNorm uses batch statistics while training.
    """
    features.trainable = not frozen
    inputs = keras.Input((None, None, 3), name="pixels")
    x = features(inputs, training=False) if frozen else features(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, head(x), name="with_new_head")


def build_small_cnn(num_classes: int, *, augment: bool, width: int = 16) -> keras.Model:
    """A small CNN trained from scratch: the baseline with far fewer weights to fit.

    Three 3x3 convolutions (``width``, ``2 * width``, ``4 * width`` channels, ReLU, each
    followed by a 2x2 max pooling), global average pooling and a softmax; no BatchNorm.
    ``augment`` adds random horizontal and vertical flips, which keep the count of shapes
    (rotations by arbitrary angles could cut shapes at the border or, with reflected
    padding, duplicate them). Takes uint8 pixels. Introduced in notebook 05.
    """
    check_count("num_classes", num_classes, minimum=2)
    check_count("width", width)
    inputs = keras.Input((None, None, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    if augment:
        x = keras.layers.RandomFlip("horizontal_and_vertical", name="flips")(x)
    for index, filters in enumerate((width, 2 * width, 4 * width), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{index}")(
            x
        )
        x = keras.layers.MaxPooling2D(name=f"pool{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="small_cnn_augmented" if augment else "small_cnn")


def _predict(model: keras.Model, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """``model`` in inference mode, batch by batch. Direct calls rather than ``predict``:
    ``predict`` traces a new graph for every new model, and TensorFlow warns about it."""
    outputs = [
        keras.ops.convert_to_numpy(model(inputs[start : start + batch_size], training=False))
        for start in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(outputs)


def trainable_count(model: keras.Model) -> int:
    """Number of trainable weights (scalars) of ``model``."""
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def unfreeze_top(features: keras.Model, prefix: str) -> list:
    """Make the layers of ``features`` whose name starts with ``prefix`` trainable, the rest
    frozen; return the weights that became trainable (recompile the model afterwards:
    Keras reads trainability when it compiles). Raises when no layer matches."""
    features.trainable = True
    unfrozen = []
    for layer in features.layers:
        layer.trainable = layer.name.startswith(prefix)
        if layer.trainable:
            unfrozen.extend(layer.trainable_weights)
    if not unfrozen:
        fail("prefix", prefix, f"the name prefix of some trainable layer of {features.name!r}")
    return unfrozen


def accuracy(model: keras.Model, images, labels, batch_size: int = 100) -> float:
    """Fraction of ``images`` whose most probable class is ``labels`` (inference mode)."""
    check_same_length("images", images, "labels", labels)
    probabilities = _predict(model, np.asarray(images), check_count("batch_size", batch_size))
    return float(np.mean(np.argmax(probabilities, axis=1) == np.asarray(labels)))


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run, measured after it: accuracies on the validation and the training
    images (both in inference mode), ``fit_training``, the training accuracy Keras reported
    during the last epoch (training mode: BatchNorm on batch statistics, augmentation on),
    the number of trainable weights and the seconds ``fit`` took."""

    validation: float
    training: float
    fit_training: float
    trainable: int
    seconds: float


def fit_and_measure(
    model: keras.Model,
    train: tuple,
    validation: tuple,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int = 20,
) -> Run:
    """Compile ``model`` (Adam at ``learning_rate``), fit it on ``train = (x, labels)`` and
    measure it on both sets in inference mode. Seed the generators before calling.
    Introduced in notebook 05."""
    check_count("epochs", epochs)
    check_positive("learning_rate", learning_rate)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    with quiet_tensorflow_logs():  # a new model per seed retraces on purpose
        history = model.fit(*train, epochs=epochs, batch_size=batch_size, verbose=0).history
    seconds = time.perf_counter() - start
    return Run(
        validation=accuracy(model, *validation),
        training=accuracy(model, *train),
        fit_training=float(history["accuracy"][-1]),
        trainable=trainable_count(model),
        seconds=seconds,
    )


def runs_table(runs: dict) -> str:
    """The transfer table: per method (``{name: {seed: Run}}``) the validation and training
    accuracies as mean ± std over seeds (both in inference mode), the training accuracy
    Keras reported while fitting, the trainable weights and the mean seconds per run.
    Introduced in notebook 05."""
    from utils.uncertainty import format_mean_std

    if not runs:
        fail("runs", runs, "at least one method with its runs {seed: Run}")
    width = max(len(name) for name in runs) + 2
    lines = [
        f"{'method':{width}s} {'validation':>24s} {'training':>24s} {'during fit':>10s} "
        f"{'trainable':>9s} {'s/run':>6s}"
    ]
    for name, by_seed in runs.items():
        if len(by_seed) < 2:
            fail(f"runs[{name!r}]", by_seed, "at least 2 seeds")
        fits = np.mean([run.fit_training for run in by_seed.values()])
        seconds = np.mean([run.seconds for run in by_seed.values()])
        trainable = next(iter(by_seed.values())).trainable
        lines.append(
            f"{name:{width}s} "
            f"{format_mean_std({s: r.validation for s, r in by_seed.items()}):>24s} "
            f"{format_mean_std({s: r.training for s, r in by_seed.items()}):>24s} "
            f"{fits:10.3f} {trainable:9,d} {seconds:6.1f}"
        )
    return "\n".join(lines)

"""The course backbone: a small ResNet trained on shapes classification, cached in data/.

Notebooks 05-10 use it as their pretrained feature extractor. One call gives it::

    backbone = load_course_backbone()    # loads data/course_backbone-<mode>-<key>.keras, or trains it
    backbone.features(images)            # [B, H, W, 3] pixels -> [B, H/8, W/8, 128]
    backbone.classifier(images)          # 64x64 shapes -> probabilities of the 5 classes

Conventions (this is the one place that states them):

- Input: RGB pixel values 0..255 (uint8 or float) ``[B, H, W, 3]``, any size. The
  scaling to [0, 1] is the model's first layer (``Rescaling(1/255)``): never divide by
  255 before calling the backbone.
- ``features``: fully convolutional, ``FEATURE_STRIDE`` = 8 pixels per cell ("same"
  padding, so ``ceil(H / 8) x ceil(W / 8)`` cells: 64x64 -> 8x8, the 128x128 detection
  images -> 16x16) and ``FEATURE_CHANNELS`` = 128 channels. Cell ``(i, j)`` is centred
  on pixel ``((j + 0.5) * 8, (i + 0.5) * 8)``; RoI layers take ``spatial_scale = 1/8``.
- ``classifier``: ``features`` -> global average pooling -> softmax over
  ``utils.shapes.CLASS_NAMES``, trained on 64x64 "medium" shapes (objects 19-48 px,
  the sizes of the objects in the 128x128 detection images).
- Caches: ``data/course_backbone-<mode>-<key>.keras`` through ``utils.cache.load_or_train``
  (the key hashes the architecture and the training settings), with a ``.json`` record beside
  it holding the validation accuracy and the training history. Full and fast mode are cached
  apart, so a fast-mode model never replaces the full one; a cache that cannot be loaded is
  reported in one line and retrained.
- Training re-seeds the global random generators (``keras.utils.set_random_seed``):
  seed again before your own experiments.

Introduced in notebook 04.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from types import MappingProxyType

import keras

from utils.cache import Trained, cache_key, cached_model_path, load_or_train
from utils.checks import check_count, check_positive
from utils.course import DATA_DIR, mode_settings, resolve_mode
from utils.resnet import build_small_resnet
from utils.shapes import CLASS_NAMES, make_shapes_split
from utils.training import fit_with_adam

FEATURE_STRIDE = 8
"""Pixels per feature-map cell: the stride-2 stem and the stride-2 first two stages."""
FEATURE_CHANNELS = 128
"""Channels of the feature map (the last stage's width)."""
IMAGE_SIZE = 64
"""Side of the classification images the backbone is trained on."""
STAGE_NAMES = ("stem_relu", "stage1_out", "stage2_out", "stage3_out")
"""Layers whose outputs are the feature maps at increasing depth (strides 2, 4, 8, 8)."""
TOP_STAGE_PREFIX = "stage3_"
"""Layer-name prefix of the last residual stage: the part fine-tuning unfreezes first."""
FORMAT_VERSION = 1
"""Bump when the architecture or the recipe changes: caches of other versions retrain."""
ARCHITECTURE = {
    "stem_width": 24,
    "stage_widths": (32, 64, FEATURE_CHANNELS),
    "stage_strides": (2, 2, 1),
}


@dataclasses.dataclass(frozen=True)
class BackboneSettings:
    """How the backbone is trained: Adam with a cosine-decaying learning rate on
    ``num_train`` seeded shapes images (made once, seen ``epochs`` times), measured on
    ``num_validation`` images of the validation split. Every field is part of the cache key."""

    num_train: int
    num_validation: int
    epochs: int
    batch_size: int = 64
    learning_rate: float = 2e-3
    difficulty: str = "medium"
    seed: int = 0

    def __post_init__(self):
        for name in ("num_train", "num_validation", "epochs", "batch_size"):
            check_count(name, getattr(self, name))
        check_positive("learning_rate", self.learning_rate)


SETTINGS = MappingProxyType(
    {
        # Full mode: the backbone the notebooks' stored outputs use (a few minutes on 2 cores).
        "full": BackboneSettings(num_train=50_000, num_validation=1_000, epochs=4),
        # Fast mode (the tests): seconds of training, a model good only for running the code.
        "fast": BackboneSettings(num_train=2_000, num_validation=500, epochs=1),
    }
)


@dataclasses.dataclass(frozen=True, eq=False)
class CourseBackbone:
    """The course backbone, as ``load_course_backbone`` returns it.

    - ``classifier``: pixels ``[B, H, W, 3]`` -> class probabilities ``[B, 5]``.
    - ``features``: the same input -> ``[B, ceil(H/8), ceil(W/8), 128]``; it shares its
      layers and weights with ``classifier``. Use ``clone_features`` for a copy to train.
    - ``source``: "cache" or "trained"; ``path``: the cache file; ``metadata``: the
      JSON record beside it (``validation_accuracy``, ``history``, ``settings``,
      ``training_seconds``, ``training_size``).
    """

    classifier: keras.Model
    features: keras.Model
    source: str
    path: Path
    metadata: dict
    class_names: tuple[str, ...] = CLASS_NAMES
    stride: int = FEATURE_STRIDE
    channels: int = FEATURE_CHANNELS

    @property
    def validation_accuracy(self) -> float:
        """Accuracy on the shapes validation set, measured after training."""
        return self.metadata["validation_accuracy"]

    def stage_model(self) -> keras.Model:
        """A model giving the feature maps after the stem and each stage (``STAGE_NAMES``)."""
        outputs = [self.classifier.get_layer(name).output for name in STAGE_NAMES]
        return keras.Model(self.classifier.input, outputs, name="course_backbone_stages")

    def clone_features(self, pretrained: bool = True) -> keras.Model:
        """A new feature extractor with weights of its own: a copy of the trained ones or,
        with ``pretrained=False``, fresh random ones (the same network "from scratch").
        Training the clone never changes this backbone."""
        clone = keras.models.clone_model(self.features)
        if pretrained:
            clone.set_weights(self.features.get_weights())
        return clone


def backbone_identity(mode: str | None = None, settings: BackboneSettings | None = None) -> str:
    """A short string naming the backbone a mode gives: a hash of its architecture and
    training settings. Detectors put it in their cache keys (a model trained on top of the
    backbone is stale when it changes); computed without loading or training anything."""
    settings = SETTINGS[resolve_mode(mode)] if settings is None else settings
    recipe = {"architecture": ARCHITECTURE, "settings": settings}
    return f"v{FORMAT_VERSION}-{cache_key(recipe)}"


def cache_path(
    mode: str | None = None,
    directory: Path | str | None = None,
    settings: BackboneSettings | None = None,
) -> Path:
    """The cache file of a mode's backbone in ``directory`` (default data/)."""
    mode = resolve_mode(mode)
    folder = DATA_DIR if directory is None else Path(directory)
    identity = {"identity": backbone_identity(mode, settings)}
    return cached_model_path(folder, "course_backbone", mode, identity)


def build_backbone_classifier() -> keras.Model:
    """The untrained course-backbone classifier (``utils.resnet.build_small_resnet``)."""
    return build_small_resnet(num_classes=len(CLASS_NAMES), name="course_backbone", **ARCHITECTURE)


def train_backbone(settings: BackboneSettings, *, verbose: bool = False) -> Trained:
    """Train the backbone classifier on shapes as ``settings`` say (``utils.cache.Trained``).

    Deterministic for a recipe, machine and thread count (seeded data and weights, and
    deterministic kernels when ``setup_notebook`` switched them on). The record gets the
    final ``validation_accuracy``.
    """
    keras.utils.set_random_seed(settings.seed)
    train, validation = make_shapes_split(
        "classification",
        settings.num_train,
        settings.num_validation,
        image_size=IMAGE_SIZE,
        difficulty=settings.difficulty,
        seed=settings.seed,
    )
    model = build_backbone_classifier()
    start = time.perf_counter()
    history = fit_with_adam(
        model,
        train.images,
        train.labels,
        epochs=settings.epochs,
        steps_per_epoch=math.ceil(settings.num_train / settings.batch_size),
        learning_rate=settings.learning_rate,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        verbose=verbose,
        batch_size=settings.batch_size,
        validation_data=(validation.images, validation.labels),
    )
    seconds = time.perf_counter() - start
    # A fresh copy without the optimizer: the cache holds the weights only.
    trained = build_backbone_classifier()
    trained.set_weights(model.get_weights())
    accuracy = round(float(history["val_accuracy"][-1]), 4)
    return Trained(
        trained,
        history,
        settings.num_train,
        seconds,
        {"validation_accuracy": accuracy, "keras_version": keras.__version__},
    )


def load_course_backbone(
    verbose: bool = True,
    *,
    mode: str | None = None,
    directory: Path | str | None = None,
    settings: BackboneSettings | None = None,
    retrain: bool = False,
) -> CourseBackbone:
    """The course backbone of a mode: loaded from its cache, or trained and cached.

    ``mode`` ``"full"`` or ``"fast"`` (default: the current mode) picks ``SETTINGS[mode]``;
    ``directory`` (default data/) and ``settings`` are for tests. Prints one line saying it
    loaded the backbone (or two: why it trains, then the result), with the validation
    accuracy (``verbose``). ``utils.cache.load_or_train`` does the caching.
    """
    mode, settings = mode_settings(mode, settings, SETTINGS)
    path = cache_path(mode, directory, settings)
    classifier, info = load_or_train(
        "course backbone",
        mode,
        path,
        lambda: train_backbone(settings),
        settings=settings,
        training_data=f"{settings.num_train:,} shapes images",
        summary=lambda record: f"validation accuracy {record['validation_accuracy']:.3f}",
        check=_check_classifier,
        retrain=retrain,
        verbose=verbose,
    )
    features = keras.Model(
        classifier.input, classifier.get_layer("features").output, name="course_backbone_features"
    )
    return CourseBackbone(classifier, features, info.source, path, info.record)


def trainable_features(mode: str | None = None, *, verbose: bool = True) -> tuple[keras.Model, int]:
    """A fresh, trainable copy of the course backbone's feature extractor, and its stride.

    What every detector starts from (notebooks 07-11): ``load_course_backbone(mode=mode)``
    (it prints whether it loaded or trained the backbone), then ``clone_features()``, so
    fine-tuning a detector never changes the cached backbone. Introduced in notebook 07.
    """
    course = load_course_backbone(verbose, mode=mode)
    return course.clone_features(), course.stride


def _check_classifier(classifier: keras.Model, record: dict) -> None:
    """Refuse a cached model that is not a course backbone classifier."""
    channels = classifier.get_layer("features").output.shape[-1]
    classes = classifier.output.shape[-1]
    if channels != FEATURE_CHANNELS or classes != len(CLASS_NAMES):
        raise ValueError(
            f"{channels} feature channels and {classes} classes, expected "
            f"{FEATURE_CHANNELS} and {len(CLASS_NAMES)}"
        )
    if "validation_accuracy" not in record:
        raise KeyError("the record lacks validation_accuracy")


def describe_recipe(mode: str | None = None) -> str:
    """The course backbone's recipe as printable lines: architecture, data and training plan
    of ``SETTINGS[mode]`` (default: the current mode). Reads the settings, changes nothing.
    Introduced in notebook 04."""
    mode = resolve_mode(mode)
    settings = SETTINGS[mode]
    steps = math.ceil(settings.num_train / settings.batch_size)
    widths = ", ".join(str(width) for width in ARCHITECTURE["stage_widths"])
    strides = ", ".join(str(stride) for stride in ARCHITECTURE["stage_strides"])
    fields = ", ".join(
        f"{field.name}={getattr(settings, field.name)!r}" for field in dataclasses.fields(settings)
    )
    return "\n".join(
        [
            f"course backbone recipe ({mode} mode), identity {backbone_identity(mode)}",
            f"  architecture: Rescaling(1/255), 3x3 stride-2 stem ({ARCHITECTURE['stem_width']} "
            f"channels), one residual block per stage with {widths} channels (strides {strides}), "
            "global average pooling, softmax over "
            f"{len(CLASS_NAMES)} classes",
            f"  data: {settings.num_train:,} training and {settings.num_validation:,} validation "
            f"{IMAGE_SIZE}x{IMAGE_SIZE} '{settings.difficulty}' shapes images (seed {settings.seed})",
            f"  training: Adam, learning rate {settings.learning_rate:g} decayed to 0 along a cosine, "
            f"batch {settings.batch_size}, {settings.epochs} epoch(s) x {steps:,} steps",
            f"  BackboneSettings({fields})",
        ]
    )

"""The course backbone: a small ResNet trained on shapes classification, cached in data/.

Notebooks 05-10 use it as their pretrained feature extractor. One call gives it::

    backbone = load_course_backbone()    # loads data/course_backbone.keras, or trains it
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
- Caches: full mode ``data/course_backbone.keras``; fast mode
  ``data/course_backbone_fast.keras``, a short training run under its own name, so a
  fast-mode model never replaces the full one. Each has a ``.json`` beside it with the
  validation accuracy and how it was trained. Both files are written atomically (a
  temporary file, then ``os.replace``): two processes training at once never leave half
  a file. A cache that cannot be loaded, or that was made by another recipe, is
  reported in one line and retrained.
- Training re-seeds the global random generators (``keras.utils.set_random_seed``):
  seed again before your own experiments.

Introduced in notebook 04.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import keras

from utils.cache import relative_to_root, save_model_and_record
from utils.course import DATA_DIR, is_fast_mode
from utils.resnet import build_small_resnet
from utils.shapes import CLASS_NAMES, make_shapes_split

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
class TrainingPlan:
    """How a backbone is trained: Adam with a cosine-decaying learning rate on
    ``num_train`` seeded shapes images (made once, seen ``epochs`` times), measured on
    ``num_validation`` images of the validation split."""

    num_train: int
    num_validation: int
    epochs: int
    batch_size: int = 64
    learning_rate: float = 2e-3
    difficulty: str = "medium"
    seed: int = 0

    def __post_init__(self):
        for name in ("num_train", "num_validation", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate!r}: expected a positive number")


FULL_PLAN = TrainingPlan(num_train=50_000, num_validation=1_000, epochs=4)
"""Full mode: the backbone the notebooks' stored outputs use (a few minutes on 2 cores)."""
FAST_PLAN = TrainingPlan(num_train=2_000, num_validation=500, epochs=1)
"""Fast mode (the tests): seconds of training, a model good only for running the code."""


@dataclasses.dataclass(frozen=True, eq=False)
class CourseBackbone:
    """The course backbone, as ``load_course_backbone`` returns it.

    - ``classifier``: pixels ``[B, H, W, 3]`` -> class probabilities ``[B, 5]``.
    - ``features``: the same input -> ``[B, ceil(H/8), ceil(W/8), 128]``; it shares its
      layers and weights with ``classifier``. Use ``clone_features`` for a copy to train.
    - ``source``: "cache" or "trained"; ``path``: the cache file; ``metadata``: the
      ``.json`` beside it (``validation_accuracy``, ``history``, ``plan``,
      ``training_seconds``, ``identity``).
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


def cache_path(fast: bool | None = None, directory: Path | str | None = None) -> Path:
    """The cache file of a mode (default: the current one) in ``directory`` (default data/)."""
    fast = is_fast_mode() if fast is None else fast
    folder = DATA_DIR if directory is None else Path(directory)
    return folder / ("course_backbone_fast.keras" if fast else "course_backbone.keras")


def backbone_identity(fast: bool | None = None) -> str:
    """A short string naming the backbone a mode gives: its recipe (architecture, plan).

    For other caches' keys (a model trained on top of the backbone is stale when this
    changes); computed without loading or training anything.
    """
    fast = is_fast_mode() if fast is None else fast
    return _identity(FAST_PLAN if fast else FULL_PLAN)


def _identity(plan: TrainingPlan) -> str:
    recipe = {
        "format": FORMAT_VERSION,
        "architecture": ARCHITECTURE,
        "plan": dataclasses.asdict(plan),
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return f"v{FORMAT_VERSION}-{digest}"


def build_backbone_classifier() -> keras.Model:
    """The untrained course-backbone classifier (``utils.resnet.build_small_resnet``)."""
    return build_small_resnet(num_classes=len(CLASS_NAMES), name="course_backbone", **ARCHITECTURE)


def train_backbone(plan: TrainingPlan) -> tuple[keras.Model, dict]:
    """Train the backbone classifier on shapes as ``plan`` says: ``(model, metadata)``.

    Deterministic for a plan, machine and thread count (seeded data and weights, and
    deterministic kernels when ``setup_notebook`` switched them on).
    """
    keras.utils.set_random_seed(plan.seed)
    train, validation = make_shapes_split(
        "classification",
        plan.num_train,
        plan.num_validation,
        image_size=IMAGE_SIZE,
        difficulty=plan.difficulty,
        seed=plan.seed,
    )
    model = build_backbone_classifier()
    steps = plan.epochs * math.ceil(plan.num_train / plan.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(plan.learning_rate, steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(
        train.images,
        train.labels,
        validation_data=(validation.images, validation.labels),
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        verbose=0,
    ).history
    seconds = time.perf_counter() - start
    metadata = {
        "identity": _identity(plan),
        "validation_accuracy": round(float(history["val_accuracy"][-1]), 4),
        "training_seconds": round(seconds, 1),
        "history": {
            key: [round(float(value), 4) for value in values]
            for key, values in history.items()
            if key != "learning_rate"
        },
        "plan": dataclasses.asdict(plan),
        "keras_version": keras.__version__,
    }
    # A fresh copy without the optimizer: the cache holds the weights only.
    trained = build_backbone_classifier()
    trained.set_weights(model.get_weights())
    return trained, metadata


def load_course_backbone(
    verbose: bool = True,
    *,
    fast: bool | None = None,
    directory: Path | str | None = None,
    plan: TrainingPlan | None = None,
) -> CourseBackbone:
    """The course backbone: loaded from its cache, or trained (and cached) when missing.

    ``fast`` picks the mode (default: ``COURSE_FAST``): full mode trains ``FULL_PLAN``
    into ``course_backbone.keras``, fast mode ``FAST_PLAN`` into
    ``course_backbone_fast.keras``. ``directory`` (default data/) and ``plan`` (default
    the mode's) are for tests. A cache that cannot be loaded or was trained by another
    recipe is retrained. Prints one line saying which it did (with ``verbose``).
    """
    fast = is_fast_mode() if fast is None else fast
    plan = (FAST_PLAN if fast else FULL_PLAN) if plan is None else plan
    path = cache_path(fast, directory)
    mode = "fast" if fast else "full"
    say = print if verbose else _silent
    reason = "no cache"
    if path.exists():
        try:
            classifier, metadata = _read_cache(path, _identity(plan))
        except Exception as error:  # noqa: BLE001 - any unreadable cache means "retrain"
            reason = f"{relative_to_root(path)} could not be used ({_describe(error)})"
        else:
            say(
                f"course backbone ({mode} mode): loaded {relative_to_root(path)}, validation "
                f"accuracy {metadata['validation_accuracy']:.3f}"
            )
            return _wrap(classifier, "cache", path, metadata)
    say(f"course backbone ({mode} mode): {reason}, training it ...", end=" ", flush=True)
    classifier, metadata = train_backbone(plan)
    _write_cache(classifier, metadata, path)
    say(
        f"done in {metadata['training_seconds']:.0f} s, validation accuracy "
        f"{metadata['validation_accuracy']:.3f}, saved to {relative_to_root(path)}"
    )
    return _wrap(classifier, "trained", path, metadata)


def _wrap(classifier: keras.Model, source: str, path: Path, metadata: dict) -> CourseBackbone:
    features = keras.Model(
        classifier.input, classifier.get_layer("features").output, name="course_backbone_features"
    )
    return CourseBackbone(classifier, features, source, path, metadata)


def _metadata_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _read_cache(path: Path, identity: str) -> tuple[keras.Model, dict]:
    """Load a cached model and its metadata; raise ValueError when they do not fit."""
    metadata_path = _metadata_path(path)
    if not metadata_path.exists():
        raise ValueError(f"{metadata_path.name} is missing")
    metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    if metadata.get("identity") != identity:
        raise ValueError(f"trained by recipe {metadata.get('identity')!r}, expected {identity!r}")
    classifier = keras.saving.load_model(path, compile=False)
    channels = classifier.get_layer("features").output.shape[-1]
    classes = classifier.output.shape[-1]
    if channels != FEATURE_CHANNELS or classes != len(CLASS_NAMES):
        raise ValueError(
            f"{channels} feature channels and {classes} classes, expected "
            f"{FEATURE_CHANNELS} and {len(CLASS_NAMES)}"
        )
    return classifier, metadata


def _write_cache(classifier: keras.Model, metadata: dict, path: Path) -> None:
    """Write the model and its metadata atomically (``utils.cache``)."""
    save_model_and_record(classifier, path, metadata, _metadata_path(path))


def _describe(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:160]


def _silent(*args, **kwargs) -> None:
    return None

"""R-CNN (Girshick et al., 2014): a CNN run on every warped region proposal.

The pipeline, one piece per function:
1. region proposals from selective search, computed on the image (``detection_proposals``,
   cached by ``utils.proposals``);
2. each proposal cut out and *warped* (stretched, ignoring its aspect ratio) to a fixed
   ``PATCH_SIZE`` square (``warp_proposals``);
3. every patch through the CNN on its own: the course backbone, a ``K + 1``-way softmax
   (K shape classes + background) and a class-specific box regressor
   (``build_patch_classifier``), trained on IoU-labelled proposals sampled 25 %
   foreground (``make_patch_training_set``, ``train_patch_classifier``);
4. per class: decode the box deltas, clip, drop scores below a threshold, non-maximum
   suppression (``postprocess``, ``detect``).

The original paper scored patches with per-class linear SVMs on the fine-tuned CNN's
features; Fast R-CNN showed a softmax head is as good, and the rest of the course uses
one, so this does too. Box deltas follow ``utils.boxes.encode`` with the RoI head's
weights ``BOX_WEIGHTS`` (10, 10, 5, 5), as ``utils.matching.label_proposals`` makes them.

The validation images, proposal settings and trained model defined here are shared:
notebooks 08 and 10 compare Fast and Faster R-CNN against this R-CNN on
``detection_validation_set()`` with ``detection_proposals`` and ``load_rcnn()``.
Introduced in notebook 07.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import cv2
import keras
import numpy as np
from keras import ops

from utils import boxes as box_ops
from utils.backbone import backbone_identity, load_course_backbone
from utils.cache import Trained, epoch_printer, load_or_train, mode_name
from utils.course import DATA_DIR
from utils.matching import label_proposals, sample_balanced
from utils.proposals import proposals_for_images
from utils.shapes import CLASS_NAMES, ShapesData, make_shapes

NUM_CLASSES = len(CLASS_NAMES)
"""K, the shape classes; the classifier has K + 1 outputs, index 0 is background."""
DETECTION_SEED = 7
"""The seed of the shared shapes detection sets (train and validation splits)."""
DETECTION_DIFFICULTY = "medium"
TRAINING_IMAGES = MappingProxyType({"full": 400, "fast": 16})
VALIDATION_IMAGES = MappingProxyType({"full": 150, "fast": 8})
"""Sizes of the shared sets per mode; a smaller set is a prefix of a larger one."""
PROPOSAL_MODE = "fast"
"""Selective search strategy (``utils.proposals.selective_search``)."""
MAX_PROPOSALS = 200
"""Proposals kept per image (OpenCV's ranked order), in training and evaluation."""
PATCH_SIZE = 64
"""Side of the square every proposal is warped to: the course backbone's input size."""
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
SCORE_THRESHOLD = 0.05
NMS_THRESHOLD = 0.3
"""R-CNN's per-class NMS threshold (the paper's 0.3)."""
MAX_DETECTIONS = 100
RCNN_CACHE_DIR = DATA_DIR / "rcnn"
OUTPUTS = ("class", "box")
"""The patch classifier's output names: ``[P, K + 1]`` probabilities and ``[P, 4K]`` deltas."""


@dataclass(frozen=True)
class TrainingSettings:
    """How ``load_rcnn`` trains; every field is part of the cache key."""

    num_images: int
    samples_per_image: int = 48
    foreground_fraction: float = 0.25
    epochs: int = 4
    batch_size: int = 64
    learning_rate: float = 3e-4
    seed: int = 0


TRAINING_SETTINGS = MappingProxyType(
    {
        "full": TrainingSettings(num_images=TRAINING_IMAGES["full"]),
        "fast": TrainingSettings(num_images=TRAINING_IMAGES["fast"], epochs=1),
    }
)


def _check_count(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")


def detection_validation_set(num_images: int | None = None) -> ShapesData:
    """The shared shapes detection validation images (128x128, 0..N objects each).

    ``make_shapes("detection", ..., difficulty=DETECTION_DIFFICULTY, seed=DETECTION_SEED,
    split="validation")``; ``num_images`` defaults to ``VALIDATION_IMAGES`` of the current
    mode. Notebooks 07-10 evaluate on it. Introduced in notebook 07.
    """
    if num_images is None:
        num_images = VALIDATION_IMAGES[mode_name(None)]
    _check_count("num_images", num_images)
    return make_shapes(
        "detection",
        num_images,
        difficulty=DETECTION_DIFFICULTY,
        seed=DETECTION_SEED,
        split="validation",
    )


def detection_training_set(num_images: int | None = None) -> ShapesData:
    """The shared detection training images: the "train" split of the same stream.

    ``num_images`` defaults to ``TRAINING_IMAGES`` of the current mode. Introduced in
    notebook 07.
    """
    if num_images is None:
        num_images = TRAINING_IMAGES[mode_name(None)]
    _check_count("num_images", num_images)
    return make_shapes(
        "detection", num_images, difficulty=DETECTION_DIFFICULTY, seed=DETECTION_SEED, split="train"
    )


def detection_proposals(
    data: ShapesData, *, max_proposals: int = MAX_PROPOSALS, progress: bool = True
) -> tuple[list[np.ndarray], float]:
    """Selective search proposals for a detection set, cached under ``data/proposals/``.

    ``(proposals, seconds_per_image)`` from ``utils.proposals.proposals_for_images`` with
    ``PROPOSAL_MODE``; the cache is keyed by the image bytes, so every notebook that asks
    for the same images gets the same boxes. Introduced in notebook 07.
    """
    if data.variant != "detection":
        raise ValueError(f"data.variant={data.variant!r}: expected 'detection'")
    return proposals_for_images(
        data.images,
        cache_name="detection",
        mode=PROPOSAL_MODE,
        max_proposals=max_proposals,
        progress=progress,
    )


def warp_proposals(image: np.ndarray, boxes: np.ndarray, size: int = PATCH_SIZE) -> np.ndarray:
    """Cut each box out of ``image`` and stretch it to ``size x size``: uint8 ``[P, size, size, 3]``.

    R-CNN's anisotropic warp (no context padding): output pixel ``(i, j)`` is the bilinear
    sample at the centre of cell ``(i, j)`` of a ``size x size`` grid laid over the box, in
    continuous pixel coordinates (pixel ``c`` spans ``[c, c + 1)``, its centre at ``c + 0.5``);
    samples beyond the image take the nearest edge pixel. OpenCV's ``remap`` does the
    sampling, one patch at a time (its fixed-point weights are within one grey level of
    exact bilinear). A box exactly ``size`` pixels wide and high on integer coordinates
    gives back the pixels it covers.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image has shape {image.shape} and dtype {image.dtype}: expected RGB uint8 [H, W, 3]"
        )
    boxes = np.asarray(boxes, np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes has shape {boxes.shape}: expected [P, 4] (x1, y1, x2, y2)")
    _check_count("size", size)
    steps = (np.arange(size, dtype=np.float32) + 0.5) / size
    patches = np.empty((len(boxes), size, size, 3), np.uint8)
    for index, (x1, y1, x2, y2) in enumerate(boxes):
        # Sample positions in pixel-index units (pixel c's centre is at index c).
        columns = np.broadcast_to(x1 + steps * (x2 - x1) - 0.5, (size, size))
        rows = np.broadcast_to((y1 + steps * (y2 - y1) - 0.5)[:, None], (size, size))
        patches[index] = cv2.remap(
            image,
            np.ascontiguousarray(columns, np.float32),
            np.ascontiguousarray(rows, np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
    return patches


def build_patch_classifier(
    backbone: keras.Model,
    num_classes: int = NUM_CLASSES,
    *,
    patch_size: int = PATCH_SIZE,
    hidden_units: int = 256,
    name: str = "rcnn_patch_classifier",
) -> keras.Model:
    """The CNN that R-CNN runs on every warped patch: outputs ``{"class", "box"}``.

    ``backbone`` maps images ``[B, S, S, 3]`` (pixel values 0..255, ``S = patch_size``) to
    a feature map ``[B, h, w, C]`` or a feature vector ``[B, C]``.
    On top: global average pooling, a shared ``Dense(hidden_units, relu)`` (R-CNN's fc
    layers), then ``"class"``: ``Dense(num_classes + 1, softmax)``, index 0 background,
    and ``"box"``: ``Dense(4 * num_classes)``, one ``(dx, dy, dw, dh)`` per class (class
    ``c``'s deltas are columns ``4c .. 4c + 3``), encoded with ``BOX_WEIGHTS``.
    """
    _check_count("num_classes", num_classes)
    _check_count("hidden_units", hidden_units)
    _check_count("patch_size", patch_size)
    patches = keras.Input((patch_size, patch_size, 3), name="patch")
    features = backbone(patches)
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    shared = keras.layers.Dense(hidden_units, activation="relu", name="fc")(features)
    scores = keras.layers.Dense(num_classes + 1, activation="softmax", name="class")(shared)
    deltas = keras.layers.Dense(4 * num_classes, name="box", kernel_initializer="zeros")(shared)
    return keras.Model(patches, {"class": scores, "box": deltas}, name=name)


def class_specific_box_loss(y_true, y_pred):
    """Smooth L1 (beta 1) on the true class's deltas, 0 for background: ``[P, 5], [P, 4K] -> [P]``.

    ``y_true`` rows are ``(label, dx, dy, dw, dh)`` with label 0 for background and
    ``c + 1`` for class ``c``; Keras' mean over the batch then divides by all sampled
    patches, Fast R-CNN's normalisation.
    """
    labels = ops.cast(y_true[:, 0], "int32")
    targets = y_true[:, 1:]
    num_classes = y_pred.shape[-1] // 4
    deltas = ops.reshape(y_pred, (-1, num_classes, 4))
    chosen = ops.one_hot(ops.maximum(labels - 1, 0), num_classes)[:, :, None]
    predicted = ops.sum(deltas * chosen, axis=1)
    difference = ops.abs(predicted - targets)
    smooth = ops.where(difference < 1.0, 0.5 * difference**2, difference - 0.5)
    foreground = ops.cast(labels > 0, smooth.dtype)
    return ops.sum(smooth, axis=-1) * foreground


def compile_patch_classifier(model: keras.Model, learning_rate: float = 3e-4) -> None:
    """Adam on ``cross-entropy(class) + smooth L1(box)``, with class accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={"class": "sparse_categorical_crossentropy", "box": class_specific_box_loss},
        metrics={"class": ["accuracy"]},
    )


@dataclass(frozen=True, eq=False)
class PatchSet:
    """IoU-labelled, warped training patches.

    ``patches`` uint8 ``[N, S, S, 3]``; ``labels`` int64 ``[N]`` (0 background, ``c + 1``);
    ``box_targets`` float32 ``[N, 5]`` rows ``(label, dx, dy, dw, dh)`` as
    ``class_specific_box_loss`` takes them; ``image_index`` and ``boxes`` say where each
    patch came from.
    """

    patches: np.ndarray
    labels: np.ndarray
    box_targets: np.ndarray
    image_index: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def make_patch_training_set(
    data: ShapesData,
    proposals: Sequence[np.ndarray],
    *,
    samples_per_image: int = 48,
    foreground_fraction: float = 0.25,
    seed: int = 0,
    size: int = PATCH_SIZE,
    progress: bool = False,
) -> PatchSet:
    """R-CNN's fine-tuning set: per image, proposals plus the ground-truth boxes, labelled by IoU.

    ``utils.matching.label_proposals`` (foreground at IoU >= 0.5 with the class and its
    regression target, background below), then ``sample_balanced``: up to
    ``samples_per_image`` patches, at most ``foreground_fraction`` of them foreground
    (R-CNN: 32 of 128), each warped with ``warp_proposals``.
    """
    if len(proposals) != len(data):
        raise ValueError(
            f"proposals has {len(proposals)} images and data {len(data)}: expected one per image"
        )
    _check_count("samples_per_image", samples_per_image)
    rng = np.random.default_rng(seed)
    parts = {"patches": [], "labels": [], "box_targets": [], "image_index": [], "boxes": []}
    indices = range(len(data))
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="labelling and warping", unit="image")
    for index in indices:
        truth_boxes, truth_labels = data.boxes[index], data.labels[index]
        candidates = np.concatenate([np.asarray(proposals[index], np.float32), truth_boxes])
        targets = label_proposals(candidates, truth_boxes, truth_labels, weights=BOX_WEIGHTS)
        chosen = sample_balanced(targets.labels, samples_per_image, foreground_fraction, rng)
        parts["patches"].append(warp_proposals(data.images[index], candidates[chosen], size))
        parts["labels"].append(targets.labels[chosen])
        parts["box_targets"].append(
            np.concatenate(
                [
                    targets.labels[chosen, None].astype(np.float32),
                    targets.regression_targets[chosen],
                ],
                axis=1,
            )
        )
        parts["image_index"].append(np.full(len(chosen), index, np.int64))
        parts["boxes"].append(candidates[chosen])
    return PatchSet(**{key: np.concatenate(value) for key, value in parts.items()})


def train_patch_classifier(
    model: keras.Model,
    patch_set: PatchSet,
    settings: TrainingSettings,
    *,
    verbose: bool = True,
) -> dict[str, list[float]]:
    """Fine-tune the patch classifier on a ``PatchSet``; return the Keras history dict."""
    compile_patch_classifier(model, settings.learning_rate)
    history = model.fit(
        patch_set.patches,
        {"class": patch_set.labels, "box": patch_set.box_targets},
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[
            epoch_printer(
                {"class": "class_loss", "box": "box_loss"},
                accuracy=("patch accuracy", "class_accuracy"),
            )
        ]
        if verbose
        else [],
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}


@dataclass(frozen=True, eq=False)
class Detections:
    """One image's detections: ``boxes`` float32 ``[D, 4]``, ``labels`` int64 ``[D]``
    (0-based classes), ``scores`` float32 ``[D]``, highest score first. Unpacks as the
    ``(boxes, labels, scores)`` triple ``utils.metrics.mean_average_precision`` takes."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __iter__(self):
        return iter((self.boxes, self.labels, self.scores))

    def __len__(self) -> int:
        return len(self.scores)


def postprocess(
    probabilities: np.ndarray,
    deltas: np.ndarray,
    proposals: np.ndarray,
    image_size: tuple[int, int],
    *,
    score_threshold: float = SCORE_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    max_detections: int = MAX_DETECTIONS,
) -> Detections:
    """From per-patch outputs to detections: per class decode, clip, threshold, NMS.

    ``probabilities`` ``[P, K + 1]``, ``deltas`` ``[P, 4K]``, ``proposals`` ``[P, 4]``,
    ``image_size`` ``(height, width)``. For each class ``c`` every proposal becomes the box
    ``decode(deltas_c, proposal)`` scored ``probabilities[:, c + 1]``; boxes scoring at most
    ``score_threshold`` go; NMS runs per class; the best ``max_detections`` over all
    classes are kept (torchvision's RoI-head inference).

    All classes go through one ``utils.boxes.nms`` call, as in torchvision's
    ``batched_nms``: each class's boxes are shifted by ``label * (largest coordinate + 1)``
    so boxes of different classes never overlap, which is per-class NMS in one pass.
    """
    probabilities = np.asarray(probabilities, np.float32)
    proposals = np.asarray(proposals, np.float32).reshape(-1, 4)
    num_classes = probabilities.shape[1] - 1
    if len(probabilities) != len(proposals):
        raise ValueError(
            f"probabilities has {len(probabilities)} rows and proposals {len(proposals)}: "
            "expected one row per proposal"
        )
    # Class-major order [K, P], so equal scores keep the lower class, then the earlier proposal.
    deltas = np.asarray(deltas, np.float32).reshape(len(proposals), num_classes, 4)
    deltas = deltas.transpose(1, 0, 2)
    scores = probabilities[:, 1:].T
    keep = scores > score_threshold
    labels = np.broadcast_to(np.arange(num_classes, dtype=np.int64)[:, None], keep.shape)[keep]
    anchors = np.broadcast_to(proposals, deltas.shape)[keep]
    boxes = box_ops.decode(deltas[keep], anchors, weights=BOX_WEIGHTS)
    boxes = box_ops.clip(boxes, *image_size)
    scores = scores[keep]
    offsets = labels[:, None].astype(np.float32) * (max(image_size) + 1.0)
    chosen = box_ops.nms(boxes + offsets, scores, nms_threshold, max_detections)
    return Detections(boxes[chosen], labels[chosen], scores[chosen])


def classify_patches(model: keras.Model, patches: np.ndarray, batch_size: int = 256):
    """Run the patch classifier on ``[P, S, S, 3]`` patches: ``(probabilities, deltas)`` NumPy.

    The CNN sees each patch on its own; batching only groups them for the CPU.
    ``predict_on_batch`` (a compiled function) rather than ``predict``, whose fixed cost
    per call (about 0.1 s here) would hide how the time grows with the number of patches.
    """
    _check_count("batch_size", batch_size)
    if len(patches) == 0:
        num_classes = model.output["box"].shape[-1] // 4
        return np.zeros((0, num_classes + 1), np.float32), np.zeros(
            (0, 4 * num_classes), np.float32
        )
    outputs = [
        model.predict_on_batch(patches[start : start + batch_size])
        for start in range(0, len(patches), batch_size)
    ]
    return (
        np.concatenate([np.asarray(output["class"]) for output in outputs]),
        np.concatenate([np.asarray(output["box"]) for output in outputs]),
    )


def detect(model: keras.Model, image: np.ndarray, proposals: np.ndarray, **options) -> Detections:
    """R-CNN on one image and its proposals: warp, classify every patch, ``postprocess``."""
    proposals = np.asarray(proposals, np.float32).reshape(-1, 4)
    patches = warp_proposals(image, proposals, model.input.shape[1])
    probabilities, deltas = classify_patches(model, patches)
    return postprocess(probabilities, deltas, proposals, image.shape[:2], **options)


def detect_images(
    model: keras.Model,
    images: np.ndarray,
    proposals: Sequence[np.ndarray],
    *,
    progress: bool = True,
    **options,
) -> tuple[list[Detections], dict[str, float]]:
    """``detect`` on every image, timed: ``(detections, timing)``.

    ``timing`` holds seconds per image for ``"warp"`` (cutting and resizing patches),
    ``"cnn"`` (the patch classifier), ``"postprocess"`` (decode, clip, NMS), their sum
    ``"detection"``, plus ``"cnn_per_patch"`` and ``"patches_per_image"``. Proposal time
    is not included: it comes with the proposals (``detection_proposals``).
    """
    if len(images) != len(proposals):
        raise ValueError(
            f"images has {len(images)} entries and proposals {len(proposals)}: expected one per image"
        )
    size = model.input.shape[1]
    # Compile the prediction function first (two batch shapes, so it generalises to any),
    # so that one-time tracing is not billed to the first image.
    blank = np.zeros((2, size, size, 3), np.uint8)
    classify_patches(model, blank[:1])
    classify_patches(model, blank)

    def detect_one(index):
        boxes = np.asarray(proposals[index], np.float32).reshape(-1, 4)
        start = time.perf_counter()
        patches = warp_proposals(images[index], boxes, size)
        warped = time.perf_counter()
        probabilities, deltas = classify_patches(model, patches)
        classified = time.perf_counter()
        detections = postprocess(probabilities, deltas, boxes, images[index].shape[:2], **options)
        seconds = {
            "warp": warped - start,
            "cnn": classified - warped,
            "postprocess": time.perf_counter() - classified,
        }
        return detections, seconds, len(boxes)

    results, timing, patches_seen = time_per_image(
        len(images),
        detect_one,
        ("warp", "cnn", "postprocess"),
        description="R-CNN detection",
        progress=progress,
    )
    timing["detection"] = sum(timing.values())
    timing["cnn_per_patch"] = timing["cnn"] * max(len(images), 1) / max(patches_seen, 1)
    timing["patches_per_image"] = patches_seen / max(len(images), 1)
    return results, timing


def time_per_image(
    count: int,
    detect_one,
    stages: Sequence[str],
    *,
    description: str,
    progress: bool = True,
) -> tuple[list[Detections], dict[str, float], int]:
    """Run a detector image by image and average its stage times: ``(detections, timing, proposals)``.

    ``detect_one(index)`` handles image ``index`` and returns ``(detections, seconds,
    proposal_count)``, ``seconds`` mapping each of ``stages`` to the time it took on that
    image. ``timing`` is the mean seconds per image of each stage (zeros for no images);
    ``proposals`` the number of proposals over all images. A ``tqdm`` bar named
    ``description`` shows the progress when ``progress``. The timing loop of
    ``detect_images`` here, in ``utils.fast_rcnn`` and in ``utils.faster_rcnn``.
    """
    totals = dict.fromkeys(stages, 0.0)
    results = []
    seen = 0
    indices = range(count)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc=description, unit="image")
    for index in indices:
        detections, seconds, proposals = detect_one(index)
        results.append(detections)
        seen += proposals
        for stage in stages:
            totals[stage] += seconds[stage]
    return results, {stage: total / max(count, 1) for stage, total in totals.items()}, seen


def rcnn_backbone(fast: bool | None = None, *, verbose: bool = True) -> keras.Model:
    """A fresh, trainable copy of the course backbone's feature extractor, R-CNN's CNN.

    ``utils.backbone.load_course_backbone(fast=...).clone_features()``: pixels 0..255
    ``[B, H, W, 3]`` to a ``[B, H/8, W/8, 128]`` feature map, pretrained on shapes
    classification; loaded from ``data/`` or trained there first (the loader prints which).
    Fine-tuning the copy leaves the cached backbone as it is.
    """
    backbone = load_course_backbone(verbose, fast=mode_name(fast) == "fast")
    return backbone.clone_features()


def rcnn_cache_path(fast: bool | None = None) -> Path:
    """Where ``load_rcnn`` keeps the trained model of a mode: ``data/rcnn/rcnn-<mode>-<key>.keras``.

    The key hashes the course backbone's identity and the training, data and proposal
    settings, so changing any of them retrains instead of loading a stale model.
    """
    mode = mode_name(fast)
    settings = {
        "backbone": backbone_identity(mode == "fast"),
        "training": TRAINING_SETTINGS[mode].__dict__,
        "proposals": [PROPOSAL_MODE, MAX_PROPOSALS],
        "data": [DETECTION_SEED, DETECTION_DIFFICULTY],
        "patch": [PATCH_SIZE, list(BOX_WEIGHTS)],
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return RCNN_CACHE_DIR / f"rcnn-{mode}-{key}.keras"


@dataclass(frozen=True, eq=False)
class RCNNInfo:
    """What ``load_rcnn`` did: ``source`` "cache" or "trained", the cache ``path``, the
    training ``history``, ``training_seconds`` (as measured when it was trained) and the
    ``settings``."""

    source: str
    path: Path
    history: dict
    training_seconds: float
    num_patches: int
    settings: TrainingSettings


def load_rcnn(
    *, fast: bool | None = None, retrain: bool = False, verbose: bool = True
) -> tuple[keras.Model, RCNNInfo]:
    """The trained R-CNN patch classifier of a mode: from ``data/rcnn/`` or trained now.

    On a cache miss (or with ``retrain``) it trains deterministically: the shared training
    images (``detection_training_set``), their cached proposals, ``make_patch_training_set``
    and ``train_patch_classifier`` on the course backbone, then writes the model and its
    training record atomically (a temporary file renamed into place), so a parallel run
    never reads half a file. A cache file that cannot be read is retrained over. Prints
    one line saying which it did. ``fast`` defaults to the current mode. Returns
    ``(model, RCNNInfo)``.
    """
    mode = mode_name(fast)
    settings = TRAINING_SETTINGS[mode]
    path = rcnn_cache_path(fast)

    def train() -> Trained:
        data = detection_training_set(settings.num_images)
        proposals, _ = detection_proposals(data, progress=verbose)
        keras.utils.set_random_seed(settings.seed)
        patch_set = make_patch_training_set(
            data,
            proposals,
            samples_per_image=settings.samples_per_image,
            foreground_fraction=settings.foreground_fraction,
            seed=settings.seed,
        )
        model = build_patch_classifier(rcnn_backbone(fast, verbose=verbose))
        start = time.perf_counter()
        history = train_patch_classifier(model, patch_set, settings, verbose=verbose)
        return Trained(model, history, len(patch_set), time.perf_counter() - start)

    source, model, record = load_or_train(
        "R-CNN",
        mode,
        path,
        train,
        size_key="num_patches",
        training_data=f"{settings.num_images} images",
        retrain=retrain,
        verbose=verbose,
    )
    info = RCNNInfo(
        source,
        path,
        record["history"],
        record["training_seconds"],
        record["num_patches"],
        settings,
    )
    return model, info

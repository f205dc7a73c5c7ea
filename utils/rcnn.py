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
   suppression (``utils.roi_heads.postprocess_detections``, the same post-processing as Fast
   and Faster R-CNN; ``detect``).

The original paper scored patches with per-class linear SVMs on the fine-tuned CNN's
features; Fast R-CNN showed a softmax head is as good, and the rest of the course uses
one, so this does too. Box deltas follow ``utils.boxes.encode`` with the RoI head's
weights ``utils.roi_heads.BOX_WEIGHTS`` (10, 10, 5, 5), as ``utils.matching.label_proposals``
makes them. The training and validation images and their proposals are the shared bench
of ``utils.detection_data``. Introduced in notebook 07.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import cv2
import keras
import numpy as np
from keras import ops

from utils.checks import (
    check_boxes,
    check_count,
    check_fraction,
    check_rgb_image,
    check_same_length,
)
from utils.course import DATA_DIR
from utils.detection_data import TRAINING_IMAGES, CachedDetector
from utils.losses import smooth_l1, true_class_deltas
from utils.matching import BACKGROUND, label_proposals, sample_balanced
from utils.profiling import time_per_image
from utils.progress import progress as show_progress
from utils.roi_heads import BOX_WEIGHTS, NUM_CLASSES, Detections, postprocess_detections
from utils.shapes import ShapesData
from utils.training import EpochPrinter, fit_with_adam

PATCH_SIZE = 64
"""Side of the square every proposal is warped to: the course backbone's input size."""
RCNN_CACHE_DIR = DATA_DIR / "rcnn"
OUTPUTS = ("class", "box")
"""The patch classifier's output names: ``[P, K + 1]`` probabilities and ``[P, 4K]`` deltas."""


@dataclass(frozen=True)
class RCNNSettings:
    """How ``load_rcnn`` trains the patch classifier; every field is part of the cache key.

    Adam at a constant ``learning_rate``; per training image ``samples_per_image`` warped
    proposals, at most ``foreground_fraction`` of them foreground (R-CNN: 32 of 128).
    """

    num_images: int
    samples_per_image: int = 48
    foreground_fraction: float = 0.25
    epochs: int = 4
    batch_size: int = 64
    learning_rate: float = 3e-4
    seed: int = 0


SETTINGS = MappingProxyType(
    {
        "full": RCNNSettings(num_images=TRAINING_IMAGES["full"]),
        "fast": RCNNSettings(num_images=TRAINING_IMAGES["fast"], epochs=1),
    }
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
    image = check_rgb_image(image)
    boxes = check_boxes(boxes)
    check_count("size", size)
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
    check_count("num_classes", num_classes)
    check_count("hidden_units", hidden_units)
    check_count("patch_size", patch_size)
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
    ``c + 1`` for class ``c`` (the label rides along with the targets because a Keras loss
    sees only its own output's targets); Keras' mean over the batch then divides by all
    sampled patches, Fast R-CNN's normalisation.
    """
    labels = ops.cast(y_true[:, 0], "int32")
    smooth = smooth_l1(true_class_deltas(y_pred, labels) - y_true[:, 1:], beta=1.0)
    return ops.sum(smooth, axis=-1) * ops.cast(labels > BACKGROUND, smooth.dtype)


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
    regression target, background below: every IoU in ``[0, 0.5)``, R-CNN's fine-tuning
    rule and torchvision's; Fast R-CNN sampled background from ``[0.1, 0.5)`` only, and
    R-CNN's SVMs took negatives under 0.3), then ``sample_balanced``: up to
    ``samples_per_image`` patches, at most ``foreground_fraction`` of them foreground
    (R-CNN: 32 of 128), each warped with ``warp_proposals``.
    """
    check_same_length("proposals", proposals, "data", data)
    check_count("samples_per_image", samples_per_image)
    check_fraction("foreground_fraction", foreground_fraction)
    rng = np.random.default_rng(seed)
    parts = {"patches": [], "labels": [], "box_targets": [], "image_index": [], "boxes": []}
    indices = range(len(data))
    if progress:
        indices = show_progress(indices, desc="labelling and warping", unit="image")
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
    settings: RCNNSettings,
    *,
    verbose: bool = True,
) -> dict[str, list[float]]:
    """Fine-tune the patch classifier on a ``PatchSet``: Adam on ``cross-entropy(class) +
    smooth L1(box)`` (``class_specific_box_loss``), with class accuracy; the history."""
    return fit_with_adam(
        model,
        patch_set.patches,
        {"class": patch_set.labels, "box": patch_set.box_targets},
        epochs=settings.epochs,
        steps_per_epoch=-(-len(patch_set) // settings.batch_size),
        learning_rate=settings.learning_rate,
        cosine=False,
        loss={"class": "sparse_categorical_crossentropy", "box": class_specific_box_loss},
        metrics={"class": ["accuracy"]},
        printer=EpochPrinter(
            {"class": "class_loss", "box": "box_loss"},
            accuracy=("patch accuracy", "class_accuracy"),
        ),
        verbose=verbose,
        batch_size=settings.batch_size,
        shuffle=True,
    )


def classify_patches(model: keras.Model, patches: np.ndarray, batch_size: int = 256):
    """Run the patch classifier on ``[P, S, S, 3]`` patches: ``(probabilities, deltas)`` NumPy.

    The CNN sees each patch on its own; batching only groups them for the CPU.
    ``predict_on_batch`` (a compiled function) rather than ``predict``, whose fixed cost
    per call (about 0.1 s here) would hide how the time grows with the number of patches.
    """
    check_count("batch_size", batch_size)
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
    """R-CNN on one image and its proposals: warp, classify every patch, post-process
    (``utils.roi_heads.postprocess_detections``; ``options`` go to it)."""
    image = check_rgb_image(image)
    proposals = check_boxes(proposals)
    patches = warp_proposals(image, proposals, model.input.shape[1])
    probabilities, deltas = classify_patches(model, patches)
    return postprocess_detections(probabilities, deltas, proposals, image.shape[:2], **options)


def detect_images(
    model: keras.Model,
    images: np.ndarray,
    proposals: Sequence[np.ndarray],
    *,
    progress: bool = True,
    **options,
) -> tuple[list[Detections], dict[str, float]]:
    """``detect`` on every image, one at a time, timed: ``(detections, timing)``.

    ``timing`` holds seconds per image for ``"warp"`` (cutting and resizing patches),
    ``"cnn"`` (the patch classifier), ``"postprocess"`` (decode, clip, NMS), their sum
    ``"detection"`` (also ``"total"``), plus ``"cnn_per_patch"`` and ``"proposals_per_image"``
    (patches per image) (``utils.profiling.time_per_image``). Proposal time
    is not included: it comes with the proposals (``utils.detection_data``).
    """
    check_same_length("images", images, "proposals", proposals)
    size = model.input.shape[1]
    # Compile the prediction function first (two batch shapes, so it generalises to any),
    # so that one-time tracing is not billed to the first image.
    blank = np.zeros((2, size, size, 3), np.uint8)
    classify_patches(model, blank[:1])
    classify_patches(model, blank)

    def detect_one(index, timer):
        image = check_rgb_image(images[index])
        boxes = check_boxes(proposals[index])
        with timer("warp"):
            patches = warp_proposals(image, boxes, size)
        with timer("cnn"):
            probabilities, deltas = classify_patches(model, patches)
        with timer("postprocess"):
            detections = postprocess_detections(
                probabilities, deltas, boxes, image.shape[:2], **options
            )
        return detections, len(boxes)

    results, timing = time_per_image(
        len(images),
        detect_one,
        ("warp", "cnn", "postprocess"),
        description="R-CNN detection",
        progress=progress,
    )
    timing["cnn_per_patch"] = timing["cnn"] / max(timing["proposals_per_image"], 1e-12)
    return results, timing


def _fit_rcnn(settings, backbone, stride, data, proposals, verbose):
    # Warping counts as training time: R-CNN warps every patch again to train.
    patch_set = make_patch_training_set(
        data,
        proposals,
        samples_per_image=settings.samples_per_image,
        foreground_fraction=settings.foreground_fraction,
        seed=settings.seed,
    )
    model = build_patch_classifier(backbone)
    history = train_patch_classifier(model, patch_set, settings, verbose=verbose)
    return model, history, len(patch_set)


#: The R-CNN patch classifier trained on patches warped from the shared training images'
#: cached proposals (``make_patch_training_set``, ``train_patch_classifier``), from a
#: copy of the course backbone; cached under ``data/rcnn/``, the patch size and box
#: coding in the key. Its ``TrainingInfo.training_size`` counts patches. Introduced in
#: notebook 07.
RCNN = CachedDetector(
    "R-CNN",
    RCNN_CACHE_DIR,
    "rcnn",
    SETTINGS,
    _fit_rcnn,
    proposals=True,
    key_parts={"patch": [PATCH_SIZE, BOX_WEIGHTS]},
)
#: ``load_rcnn(mode=None, retrain=False, verbose=True) -> (model, info)``: the trained
#: R-CNN (``utils.detection_data.CachedDetector.load``).
load_rcnn = RCNN.load

"""Fast R-CNN (Girshick, 2015): one CNN pass per image, RoI pooling, a two-output head.

Where R-CNN (``utils.rcnn``) runs the CNN once per warped proposal, Fast R-CNN runs the
backbone once over the whole image and cuts every proposal out of the *feature map*:
1. selective search proposals, computed on the image as in R-CNN
   (``utils.detection_data.detection_proposals``), then projected onto the feature map by
   ``spatial_scale = 1 / feature_stride`` inside the RoI pooling layer;
2. ``utils.layers.RoIPooling`` max-pools each projected proposal to a fixed ``PH x PW``
   grid, whatever its size;
3. the RoI head (``utils.roi_heads.FastRCNNHead``): fully connected layers, then a
   ``K + 1``-way classifier (index 0 is background) and a class-specific box regressor;
4. training: per image (mirrored at random), the ground-truth boxes are added to the
   proposals and RoIs are sampled, 25 % foreground (``utils.roi_heads.sample_rois``,
   ``RoITrainingBatches``); the multi-task loss is ``utils.roi_heads.fast_rcnn_loss``; the
   recipe (``utils.roi_heads.TrainingRecipe``) is the one Faster R-CNN trains with;
5. inference: softmax, then ``utils.roi_heads.postprocess_detections`` (per-class decode,
   clip, score > 0.05, per-class NMS, top 100), the same post-processing R-CNN uses.

Introduced in notebook 08.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from utils import boxes as box_ops
from utils.checks import (
    check_boxes,
    check_count,
    check_fraction,
    check_rgb_image,
    check_same_length,
)
from utils.course import DATA_DIR
from utils.detection_data import TRAINING_IMAGES, CachedDetector
from utils.detector_model import from_backbone_config
from utils.layers import boxes_to_rois, image_rois
from utils.profiling import time_per_image
from utils.roi_heads import (
    BOX_WEIGHTS,
    FOREGROUND_FRACTION,
    HIDDEN_UNITS,
    NUM_CLASSES,
    POOL_SIZE,
    RECIPES,
    CompiledHead,
    Detections,
    FastRCNNHead,
    TrainingRecipe,
    fast_rcnn_loss,
    postprocess_detections,
    sample_rois,
)
from utils.shapes import ShapesData
from utils.training import EpochPrinter, fit_with_adam

FAST_RCNN_CACHE_DIR = DATA_DIR / "fast_rcnn"


# ---- training batches -------------------------------------------------------------------


class RoITrainingBatches(keras.utils.PyDataset):
    """Training batches for ``FastRCNN.fit``: a few images each, RoIs sampled afresh per epoch.

    Batch ``i`` is ``(x, y)`` with ``x = {"images": uint8 [B, H, W, 3], "proposals":
    float32 [B, S, 4]}`` and ``y = {"labels": int32 [B, S], "regression_targets": float32
    [B, S, 4]}`` (``sample_rois`` per image, ``S = samples_per_image``): Fast R-CNN's
    hierarchical sampling, N images then R / N RoIs from each, so the RoIs of a batch
    share their images' feature maps. With ``horizontal_flip`` (``vertical_flip``) each
    image is mirrored left-right (top-bottom), with its proposals and ground truth, half of
    the time (the paper mirrors left-right only). The image order, the flips and the
    samples depend only on ``seed``, the epoch and the image, so runs repeat exactly.
    """

    def __init__(
        self,
        data: ShapesData,
        proposals: Sequence[np.ndarray],
        *,
        images_per_batch: int = 2,
        samples_per_image: int = 64,
        foreground_fraction: float = FOREGROUND_FRACTION,
        horizontal_flip: bool = False,
        vertical_flip: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        check_same_length("proposals", proposals, "data", data)
        self.data = data
        self.proposals = proposals
        self.images_per_batch = check_count("images_per_batch", images_per_batch)
        self.samples_per_image = check_count("samples_per_image", samples_per_image)
        self.foreground_fraction = check_fraction("foreground_fraction", foreground_fraction)
        self.flips = tuple(
            horizontal
            for horizontal, wanted in ((True, horizontal_flip), (False, vertical_flip))
            if wanted
        )
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.images_per_batch)

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.data))

    def _example(self, image: int):
        """One image's pixels and sampled RoIs for this epoch, mirrored or not."""
        rng = np.random.default_rng([self.seed, self.epoch, image])
        pixels = self.data.images[image]
        proposals = check_boxes(self.proposals[image])
        truth = check_boxes(self.data.boxes[image])
        for horizontal in self.flips:
            if rng.random() < 0.5:
                axis = 1 if horizontal else 0
                pixels = np.flip(pixels, axis=axis)
                size = pixels.shape[axis]
                proposals, truth = (
                    box_ops.flip_boxes(b, size, horizontal=horizontal) for b in (proposals, truth)
                )
        sample = sample_rois(
            proposals,
            truth,
            self.data.labels[image],
            num_samples=self.samples_per_image,
            foreground_fraction=self.foreground_fraction,
            rng=rng,
        )
        return pixels, sample

    def __getitem__(self, index):
        chosen = self._order()[index * self.images_per_batch : (index + 1) * self.images_per_batch]
        pixels, samples = zip(*(self._example(int(image)) for image in chosen), strict=True)
        x = {"images": np.stack(pixels), "proposals": np.stack([s.boxes for s in samples])}
        y = {
            "labels": np.stack([s.labels for s in samples]),
            "regression_targets": np.stack([s.regression_targets for s in samples]),
        }
        return x, y

    def on_epoch_end(self):
        self.epoch += 1


# ---- the model --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="course")
class FastRCNN(keras.Model):
    """Fast R-CNN: a backbone run once per image and a ``FastRCNNHead`` on its proposals.

    ``model({"images": [B, H, W, 3], "proposals": [B, S, 4]})`` returns
    ``{"class_logits": [B, S, K + 1], "box_deltas": [B, S, 4K]}``; images are pixel
    values 0..255 (uint8 or float), proposals are xyxy boxes in image pixels. The
    ``backbone`` maps images to a feature map ``[B, H / s, W / s, C]`` with
    ``s = feature_stride``, and the head pools proposals at ``spatial_scale = 1 / s``.
    The backbone always runs with ``training=False``: its BatchNorm statistics stay
    frozen, as detectors fine-tune with a few images per batch (torchvision's
    ``FrozenBatchNorm2d``); its weights still train unless ``backbone.trainable`` is
    False.

    Args:
        backbone: pixels ``[B, H, W, 3]`` to a feature map with a known channel count.
        num_classes: K.
        feature_stride: image pixels per feature-map cell.
        pool_size, hidden_units, dropout, pooling: the head's (``FastRCNNHead``).

    Training: ``compile(optimizer)`` then ``fit`` on ``RoITrainingBatches``, whose
    targets ``{"labels", "regression_targets"}`` go to ``compute_loss``
    (``fast_rcnn_loss``); the logs hold ``loss``, ``class_loss``, ``box_loss`` and the
    sampled RoIs' classification ``accuracy``. Inference: ``score_proposals``,
    ``detect`` and ``detect_images``. Introduced in notebook 08.
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_classes: int = NUM_CLASSES,
        *,
        feature_stride: int,
        pool_size: int | tuple[int, int] = POOL_SIZE,
        hidden_units: Sequence[int] = HIDDEN_UNITS,
        dropout: float = 0.0,
        pooling: str = "roi_pool",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.feature_stride = check_count("feature_stride", feature_stride)
        channels = backbone.output.shape[-1]
        if len(backbone.output.shape) != 4 or channels is None:
            raise ValueError(
                f"backbone output shape {tuple(backbone.output.shape)}: expected a feature "
                "map [B, h, w, C] with a known channel count"
            )
        self.backbone = backbone
        self.head = FastRCNNHead(
            num_classes,
            spatial_scale=1.0 / self.feature_stride,
            pool_size=pool_size,
            hidden_units=hidden_units,
            dropout=dropout,
            pooling=pooling,
            name="head",
        )
        self.head.build((None, None, None, channels), (None, 5))
        self.num_classes = self.head.num_classes
        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in ("class_loss", "box_loss", "accuracy")
        }
        self._inference_functions = {}
        self._compiled_head = CompiledHead(self.head)
        self.built = True

    def build(self, input_shape=None):
        # Every weight exists after __init__ (the backbone is built, the head is built
        # from the backbone's channel count), so loading a saved model needs no call.
        self.built = True

    def features(self, images):
        """The backbone's feature map of pixel images ``[B, H, W, 3]`` (0..255)."""
        return self.backbone(ops.cast(images, "float32"), training=False)

    def call(self, inputs, training=None):
        features = self.features(inputs["images"])
        proposals = ops.cast(inputs["proposals"], "float32")
        class_logits, box_deltas = self.head(features, boxes_to_rois(proposals), training=training)
        shape = ops.shape(proposals)
        return {
            "class_logits": ops.reshape(class_logits, (shape[0], shape[1], self.num_classes + 1)),
            "box_deltas": ops.reshape(box_deltas, (shape[0], shape[1], 4 * self.num_classes)),
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        losses = fast_rcnn_loss(
            y["labels"], y["regression_targets"], y_pred["class_logits"], y_pred["box_deltas"]
        )
        for name, tracker in self.trackers.items():
            tracker.update_state(losses[name])
        return losses["loss"]

    # -- inference ---------------------------------------------------------------------

    def compiled_parts(self, image_shape):
        """The two inference stages at one image size: ``(backbone, head)``.

        ``backbone``: a ``tf.function`` of ``features`` on one uint8 image, XLA-compiled;
        ``head``: a ``utils.roi_heads.CompiledHead``. ``warm_up`` compiles them.
        """
        image_shape = tuple(int(n) for n in image_shape)
        if image_shape not in self._inference_functions:
            self._inference_functions[image_shape] = (
                tf.function(
                    self.features,
                    input_signature=[tf.TensorSpec((1, *image_shape), "uint8")],
                    jit_compile=True,
                ),
                self._compiled_head,
            )
        return self._inference_functions[image_shape]

    def warm_up(self, image: np.ndarray, max_proposals: int) -> None:
        """Compile the inference graphs for ``image``'s size and up to ``max_proposals`` RoIs."""
        image = check_rgb_image(image)
        backbone, head = self.compiled_parts(image.shape)
        head.warm_up(backbone(image[None]), max_proposals)

    def score_proposals(self, image: np.ndarray, proposals: np.ndarray):
        """One image's proposals through the network: ``(probabilities [P, K + 1], deltas [P, 4K])``.

        ``image`` uint8 ``[H, W, 3]``. The backbone runs once on the whole image, the head
        on every proposal; NumPy out.
        """
        image = check_rgb_image(image)
        backbone, head = self.compiled_parts(image.shape)
        return head(backbone(image[None]), image_rois(check_boxes(proposals, "proposals")))

    def get_config(self):
        config = super().get_config()
        options = self.head.options()
        del options["spatial_scale"]  # it follows from feature_stride
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            feature_stride=self.feature_stride,
            **options,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return from_backbone_config(cls, config)


def detect(model: FastRCNN, image: np.ndarray, proposals: np.ndarray, **options) -> Detections:
    """Fast R-CNN on one image and its proposals: ``score_proposals`` then
    ``utils.roi_heads.postprocess_detections`` (``options`` go to it)."""
    image = check_rgb_image(image)
    proposals = check_boxes(proposals, "proposals")
    probabilities, deltas = model.score_proposals(image, proposals)
    return postprocess_detections(probabilities, deltas, proposals, image.shape[:2], **options)


def detect_images(
    model: FastRCNN,
    images: np.ndarray,
    proposals: Sequence[np.ndarray],
    *,
    progress: bool = True,
    **options,
) -> tuple[list[Detections], dict[str, float]]:
    """``detect`` on every image, one at a time, timed: ``(detections, timing)``.

    ``timing`` holds seconds per image for ``"backbone"`` (one pass over the whole image),
    ``"head"`` (RoI pooling and the fully connected head on every proposal),
    ``"postprocess"`` (decode, clip, NMS), their sum ``"detection"`` (also ``"total"``), plus
    ``"proposals_per_image"`` (``utils.profiling.time_per_image``). Proposal time is not included: it comes with the
    proposals. Before timing, the graphs are compiled (``FastRCNN.warm_up``) for the first
    image's size and every RoI count up to the largest, so compiling is not counted.
    """
    check_same_length("images", images, "proposals", proposals)
    if len(images):
        model.warm_up(images[0], max(len(check_boxes(p)) for p in proposals))
        detect(model, images[0], proposals[0], **options)

    def detect_one(index, timer):
        image = check_rgb_image(images[index])
        boxes = check_boxes(proposals[index], "proposals")
        backbone, head = model.compiled_parts(image.shape)
        with timer("backbone"):
            features = backbone(image[None])
        with timer("head"):
            probabilities, deltas = head(features, image_rois(boxes))
        with timer("postprocess"):
            detections = postprocess_detections(
                probabilities, deltas, boxes, image.shape[:2], **options
            )
        return detections, len(boxes)

    return time_per_image(
        len(images),
        detect_one,
        ("backbone", "head", "postprocess"),
        description="Fast R-CNN detection",
        progress=progress,
    )


# ---- training and the cached model ------------------------------------------------------


@dataclass(frozen=True)
class FastRCNNSettings:
    """How ``load_fast_rcnn`` builds and trains; every field is part of the cache key.

    ``recipe``: the head and its training, shared with Faster R-CNN
    (``utils.roi_heads.TrainingRecipe``), with Fast R-CNN's RoI max pooling.
    """

    num_images: int
    recipe: TrainingRecipe


SETTINGS = MappingProxyType(
    {
        mode: FastRCNNSettings(TRAINING_IMAGES[mode], replace(RECIPES[mode], pooling="roi_pool"))
        for mode in ("full", "fast")
    }
)


def build_fast_rcnn(
    backbone: keras.Model,
    feature_stride: int,
    recipe: TrainingRecipe | None = None,
    num_classes: int = NUM_CLASSES,
) -> FastRCNN:
    """A ``FastRCNN`` with the head of ``recipe`` (full mode's when None)."""
    recipe = recipe or SETTINGS["full"].recipe
    return FastRCNN(
        backbone,
        num_classes,
        feature_stride=feature_stride,
        name="fast_rcnn",
        **recipe.head_options(),
    )


def train_fast_rcnn(
    model: FastRCNN,
    data: ShapesData,
    proposals: Sequence[np.ndarray],
    recipe: TrainingRecipe,
    *,
    verbose: bool = True,
) -> dict[str, list[float]]:
    """Train as ``recipe`` says on ``RoITrainingBatches``; return the Keras history (per-epoch logs).

    Adam with a cosine-decaying learning rate (``utils.training.fit_with_adam``); the RoIs
    are resampled (and the images flipped) afresh every epoch.
    """
    batches = RoITrainingBatches(
        data,
        proposals,
        images_per_batch=recipe.images_per_batch,
        samples_per_image=recipe.rois_per_image,
        foreground_fraction=recipe.foreground_fraction,
        horizontal_flip=recipe.horizontal_flip,
        vertical_flip=recipe.vertical_flip,
        seed=recipe.seed,
    )
    return fit_with_adam(
        model,
        batches,
        epochs=recipe.epochs,
        steps_per_epoch=len(batches),
        learning_rate=recipe.learning_rate,
        printer=EpochPrinter(
            {"class": "class_loss", "box": "box_loss"}, accuracy=("RoI accuracy", "accuracy")
        ),
        verbose=verbose,
        shuffle=False,
        jit_compile=False,  # RoI sampling happens outside the graph; keep GPU runs like CPU ones
    )


def _fit_fast_rcnn(settings, backbone, stride, data, proposals, verbose):
    model = build_fast_rcnn(backbone, stride, settings.recipe)
    history = train_fast_rcnn(model, data, proposals, settings.recipe, verbose=verbose)
    return model, history, len(data)


#: Fast R-CNN trained on the shared training images and their cached selective search
#: proposals, from a copy of the course backbone; cached under ``data/fast_rcnn/``.
#: Introduced in notebook 08; notebook 10 reuses it.
FAST_RCNN = CachedDetector(
    "Fast R-CNN",
    FAST_RCNN_CACHE_DIR,
    "fast_rcnn",
    SETTINGS,
    _fit_fast_rcnn,
    proposals=True,
    key_parts={"boxes": BOX_WEIGHTS},
)
#: ``load_fast_rcnn(mode=None, settings=None, retrain=False, verbose=True) -> (model,
#: info)``: the trained Fast R-CNN (``utils.detection_data.CachedDetector.load``).
load_fast_rcnn = FAST_RCNN.load

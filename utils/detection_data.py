"""The detection bench of notebooks 07-11: the shared training and validation images and
their selective search proposals.

Every detector of the course trains on ``detection_training_set()`` and is measured on
``detection_validation_set()``: 128x128 shapes images with 0..N objects each
(``utils.shapes.make_shapes("detection", ...)``, seed ``DETECTION_SEED``, difficulty
``DETECTION_DIFFICULTY``), the train and validation splits of one seeded stream, so a
smaller set is a prefix of a larger one and the two splits never share an image.
``detection_proposals`` gives the selective search boxes R-CNN and Fast R-CNN use, cached
by image bytes under ``data/proposals/`` so every notebook asking for the same images gets
the same boxes. ``CachedDetector`` is how every detector of the course is trained on this
bench and cached (``utils.cache``). Introduced in notebook 07.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import keras
import numpy as np
import tensorflow as tf

from utils import boxes as box_ops
from utils.backbone import backbone_identity, trainable_features
from utils.cache import Trained, TrainingInfo, cached_model_path, load_or_train
from utils.checks import check_choice, check_count
from utils.course import mode_settings, resolve_mode
from utils.proposals import proposals_for_images
from utils.shapes import ShapesData, make_shapes, to_tf_dataset

DETECTION_SEED = 7
"""The seed of the shared shapes detection sets (train and validation splits)."""
DETECTION_DIFFICULTY = "medium"
TRAINING_IMAGES = MappingProxyType({"full": 400, "fast": 16})
VALIDATION_IMAGES = MappingProxyType({"full": 150, "fast": 8})
"""Sizes of the shared sets per mode; a smaller set is a prefix of a larger one."""
PROPOSAL_MODE = "fast"
"""Selective search strategy (``utils.proposals.selective_search``)."""
MAX_PROPOSALS = 200
"""Selective search proposals kept per image (OpenCV's ranked order), in training and
evaluation."""


def _detection_set(split: str, num_images: int | None, sizes, mode: str | None) -> ShapesData:
    if num_images is None:
        num_images = sizes[resolve_mode(mode)]
    check_count("num_images", num_images)
    return make_shapes(
        "detection",
        num_images,
        difficulty=DETECTION_DIFFICULTY,
        seed=DETECTION_SEED,
        split=split,
    )


def detection_training_set(num_images: int | None = None, *, mode: str | None = None) -> ShapesData:
    """The shared detection training images (the "train" split).

    ``num_images`` defaults to ``TRAINING_IMAGES`` of ``mode`` (default: the current mode).
    Introduced in notebook 07.
    """
    return _detection_set("train", num_images, TRAINING_IMAGES, mode)


def detection_validation_set(
    num_images: int | None = None, *, mode: str | None = None
) -> ShapesData:
    """The shared detection validation images (the "validation" split) every detector is
    measured on. ``num_images`` defaults to ``VALIDATION_IMAGES`` of ``mode`` (default: the
    current mode). Introduced in notebook 07.
    """
    return _detection_set("validation", num_images, VALIDATION_IMAGES, mode)


def detection_proposals(
    data: ShapesData, *, max_proposals: int = MAX_PROPOSALS, progress: bool = True
) -> tuple[list[np.ndarray], float]:
    """Selective search proposals for a detection set, cached under ``data/proposals/``.

    ``(proposals, seconds_per_image)`` from ``utils.proposals.proposals_for_images`` with
    ``PROPOSAL_MODE``: one float32 ``[P_i, 4]`` array per image, best first, and the
    selective search time per image measured when the cache was made. Introduced in
    notebook 07.
    """
    check_choice("data.variant", data.variant, ("detection",))
    return proposals_for_images(
        data.images,
        cache_name="detection",
        mode=PROPOSAL_MODE,
        max_proposals=max_proposals,
        progress=progress,
    )


@dataclass
class CachedDetector:
    """One detector's cached training on this bench: where it lives and how it trains.

    ``name`` is what the loader prints; ``directory`` and ``stem`` place the file
    (``directory/<stem>-<mode>-<key>.keras``); ``settings`` maps each mode to its default
    settings; ``fit(settings, backbone, stride, data, proposals_or_None, verbose) ->
    (model, history, training_size)`` builds and trains the model; ``proposals`` says
    whether it trains on the cached selective search boxes; ``key_parts`` adds what else
    the model depends on to the cache key (e.g. the RPN's constants). ``name`` and
    ``stem`` may be functions of the settings (the one-stage detector's loss). Each
    detector module makes one (``FAST_RCNN``, ...) and exposes its ``load`` as
    ``load_<detector>``. Introduced in notebook 07.
    """

    name: str | Callable
    directory: Path
    stem: str | Callable
    settings: Mapping
    fit: Callable
    proposals: bool = False
    key_parts: Mapping = field(default_factory=dict)

    def cache_path(self, mode: str | None = None, settings=None) -> Path:
        """Where ``load`` keeps a model of ``mode`` and ``settings`` (default: the mode's).

        The key hashes the settings, ``key_parts``, the data (seed, difficulty, sizes),
        the proposal settings when it trains on selective search boxes and the course
        backbone it starts from, so changing any of them trains a new model instead of
        loading a stale one.
        """
        mode, settings = mode_settings(mode, settings, self.settings)
        parts = {
            "training": settings,
            **self.key_parts,
            "data": [DETECTION_SEED, DETECTION_DIFFICULTY, dict(TRAINING_IMAGES)],
            "backbone": backbone_identity(mode),
        }
        if self.proposals:
            parts["proposals"] = [PROPOSAL_MODE, MAX_PROPOSALS]
        return cached_model_path(self.directory, _of(self.stem, settings), mode, parts)

    def load(
        self,
        *,
        mode: str | None = None,
        settings=None,
        retrain: bool = False,
        verbose: bool = True,
    ) -> tuple[keras.Model, TrainingInfo]:
        """The trained detector of ``mode`` (default: the current one): from its cache, or
        trained now (on a miss or with ``retrain``), deterministically.

        Training: the shared training set of ``settings.num_images`` images (and their
        selective search proposals when the detector uses them), a trainable copy of the
        course backbone, the seed ``settings.recipe.seed`` (or ``settings.seed``), then
        ``fit``, timed. ``settings`` (default: the mode's) trains a variant, cached under
        its own key. ``utils.cache.load_or_train`` writes and reads the cache and prints
        what it did. Returns ``(model, utils.cache.TrainingInfo)``.
        """
        mode, settings = mode_settings(mode, settings, self.settings)

        def train() -> Trained:
            data = detection_training_set(settings.num_images)
            boxes = detection_proposals(data, progress=verbose)[0] if self.proposals else None
            backbone, stride = trainable_features(mode, verbose=verbose)
            keras.utils.set_random_seed(getattr(settings, "recipe", settings).seed)
            start = time.perf_counter()
            model, history, size = self.fit(settings, backbone, stride, data, boxes, verbose)
            return Trained(model, history, size, time.perf_counter() - start)

        return load_or_train(
            _of(self.name, settings),
            mode,
            self.cache_path(mode, settings),
            train,
            settings=settings,
            training_data=f"{settings.num_images} images",
            retrain=retrain,
            verbose=verbose,
        )


def _of(value, settings):
    """``value(settings)`` for a function, else ``value``."""
    return value(settings) if callable(value) else value


def training_batches(
    data: ShapesData,
    *,
    images_per_batch: int,
    seed: int,
    horizontal_flip: bool = False,
    vertical_flip: bool = False,
):
    """The training batches of the detectors trained through ``fit`` (Faster R-CNN, the
    one-stage detector): ``utils.shapes.to_tf_dataset``, shuffled (seeded), each image
    mirrored with its boxes at random per flip asked for (one coin per flip and image: new
    ones every epoch, the same ones every run), whole batches only (``drop_remainder``), so
    every step sees ``images_per_batch`` images, also when a distribution strategy splits
    them. Introduced in notebook 09.
    """
    check_count("images_per_batch", images_per_batch)
    max_objects = max(1, max(len(labels) for labels in data.labels))
    dataset = to_tf_dataset(data, shuffle=True, seed=seed, max_objects=max_objects)
    flips = [
        (horizontal, float(data.images.shape[2 if horizontal else 1]))
        for horizontal, wanted in ((True, horizontal_flip), (False, vertical_flip))
        if wanted
    ]
    if flips:

        @tf.autograph.experimental.do_not_convert  # plain Python over a fixed list
        def random_flips(example, coins):
            image, targets = example
            boxes = targets["boxes"]
            for (horizontal, size), coin in zip(flips, tf.unstack(coins), strict=True):
                flip = coin < 0.5
                boxes = tf.where(
                    flip, box_ops.flip_boxes(boxes, size, horizontal=horizontal), boxes
                )
                image = tf.where(flip, tf.reverse(image, axis=[1 if horizontal else 0]), image)
            return image, {**targets, "boxes": boxes}

        coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(
            lambda number: tf.random.stateless_uniform(
                (len(flips),), seed=tf.stack([number, number // 2])
            )
        )
        dataset = tf.data.Dataset.zip(dataset, coins).map(random_flips)
    return dataset.batch(min(images_per_batch, len(data)), drop_remainder=True)

"""The detection bench of notebooks 07-11: the shared training and validation images and
their selective search proposals.

Every detector of the course trains on ``detection_training_set()`` and is measured on
``detection_validation_set()``: 128x128 shapes images with 0..N objects each
(``utils.shapes.make_shapes("detection", ...)``, seed ``DETECTION_SEED``, difficulty
``DETECTION_DIFFICULTY``), the train and validation splits of one seeded stream, so a
smaller set is a prefix of a larger one and the two splits never share an image.
``detection_proposals`` gives the selective search boxes R-CNN and Fast R-CNN use, cached
by image bytes under ``data/proposals/`` so every notebook asking for the same images gets
the same boxes. Introduced in notebook 07.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from utils.checks import check_choice, check_count
from utils.course import resolve_mode
from utils.proposals import proposals_for_images
from utils.shapes import ShapesData, make_shapes

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


def detection_cache_parts(*, proposals: bool) -> dict:
    """What a detector trained on this bench depends on, for its cache key: the data (seed,
    difficulty, sizes) and, when it trains on selective search boxes, the proposal settings."""
    parts = {"data": [DETECTION_SEED, DETECTION_DIFFICULTY, dict(TRAINING_IMAGES)]}
    if proposals:
        parts["proposals"] = [PROPOSAL_MODE, MAX_PROPOSALS]
    return parts

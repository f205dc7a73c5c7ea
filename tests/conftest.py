"""Fixtures the detector tests share: a private model cache and one small detection scene
(their helpers are in ``detection_helpers``)."""

import numpy as np
import pytest
from detection_helpers import make_tiny_backbone

from utils import detection_data
from utils import proposals as proposals_module
from utils.shapes import make_shapes

SIZE = 64
CLASSES = ("circle", "square", "triangle")


@pytest.fixture
def tiny_detector_cache(tmp_path, monkeypatch):
    """Point a detector's cached training at a temporary folder, a tiny backbone and settings.

    ``tiny_detector_cache(detector, settings, stride=4)`` patches the
    ``utils.detection_data.CachedDetector``'s folder and default ``settings`` (both
    modes), the bench's backbone (``utils.detection_data.trainable_features`` and
    ``backbone_identity``) and the proposal cache; it returns the detector's cache folder.
    """
    monkeypatch.setattr(proposals_module, "PROPOSAL_CACHE_DIR", tmp_path / "proposals")

    def point(detector, settings, stride: int = 4):
        folder = tmp_path / "detector"
        monkeypatch.setattr(detector, "directory", folder)
        monkeypatch.setattr(
            detection_data,
            "trainable_features",
            lambda mode=None, verbose=True: (make_tiny_backbone(stride), stride),
        )
        monkeypatch.setattr(detection_data, "backbone_identity", lambda mode=None: "tiny")
        monkeypatch.setattr(detector, "settings", {"fast": settings, "full": settings})
        return folder

    return point


@pytest.fixture(scope="module")
def one_image():
    """A detection image with its ground truth and hand-made proposals around the objects."""
    data = make_shapes(
        "detection",
        1,
        image_size=SIZE,
        difficulty="easy",
        seed=3,
        split="train",
        classes=CLASSES,
        min_objects=2,
    )
    truth = data.boxes[0]
    rng = np.random.default_rng(0)
    jitter = rng.normal(0, 2, (len(truth), 6, 4)).astype(np.float32)
    near = (truth[:, None, :] + jitter).reshape(-1, 4)
    corners = rng.uniform(0, SIZE - 12, (20, 2)).astype(np.float32)
    far = np.concatenate([corners, corners + 12], axis=1)
    return data, np.clip(np.concatenate([near, far]), 0, SIZE)

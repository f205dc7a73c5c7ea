"""utils.detection_data: the shared detection sets are fixed, split apart and prefixes."""

import numpy as np
import pytest

from utils import detection_data
from utils import proposals as proposals_module
from utils.shapes import make_shapes


def test_shared_sets_are_fixed_and_prefixes():
    small = detection_data.detection_validation_set(2)
    large = detection_data.detection_validation_set(4)
    np.testing.assert_array_equal(small.images, large.images[:2])
    assert (
        len(detection_data.detection_validation_set()) == detection_data.VALIDATION_IMAGES["fast"]
    )
    assert len(detection_data.detection_training_set(mode="full")) == 400
    training = detection_data.detection_training_set(1)
    assert not np.array_equal(training.images, small.images[:1])
    assert small.variant == "detection" and small.images.shape[1:] == (128, 128, 3)
    with pytest.raises(ValueError, match="num_images=0"):
        detection_data.detection_validation_set(0)
    with pytest.raises(ValueError, match="mode='slow'"):
        detection_data.detection_validation_set(mode="slow")


def test_proposals_are_cached_per_image_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(proposals_module, "PROPOSAL_CACHE_DIR", tmp_path)
    data = detection_data.detection_validation_set(2)
    first, seconds = detection_data.detection_proposals(data, progress=False)
    assert len(first) == 2 and seconds > 0
    assert all(p.shape[1] == 4 and len(p) <= detection_data.MAX_PROPOSALS for p in first)
    again, _ = detection_data.detection_proposals(data, progress=False)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(ValueError, match="data.variant='classification'"):
        detection_data.detection_proposals(make_shapes("classification", 2))

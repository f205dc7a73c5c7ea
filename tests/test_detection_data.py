"""utils.detection_data: the shared detection sets are fixed, split apart and prefixes."""

import numpy as np
import pytest
from detection_helpers import TINY_IMAGE_SIZE, tiny_detection_images

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


def test_training_batches_flip_images_and_boxes_together():
    images = tiny_detection_images(2)
    seen = set()
    dataset = detection_data.training_batches(
        images, images_per_batch=1, seed=0, horizontal_flip=True, vertical_flip=True
    )
    for _ in range(4):  # four epochs: new flips each time
        for image, targets in dataset:
            image, boxes = image.numpy()[0], targets["boxes"].numpy()[0]
            count = int(targets["count"].numpy()[0])
            matches = []
            for index, original in enumerate(images.images):
                for flip_x in (False, True):
                    for flip_y in (False, True):
                        picture, truth = original, images.boxes[index].copy()
                        if flip_x:
                            picture = picture[:, ::-1]
                            truth[:, [0, 2]] = TINY_IMAGE_SIZE - truth[:, [2, 0]]
                        if flip_y:
                            picture = picture[::-1]
                            truth[:, [1, 3]] = TINY_IMAGE_SIZE - truth[:, [3, 1]]
                        if np.array_equal(picture, image):
                            matches.append((index, flip_x, flip_y))
                            np.testing.assert_allclose(boxes[:count], truth)
            assert len(matches) == 1
            seen.add(matches[0])
    assert len(seen) > 2  # flips do happen, and not always the same ones


def test_training_batches_are_whole_and_plain_without_flips():
    images = tiny_detection_images(3)
    batches = list(detection_data.training_batches(images, images_per_batch=2, seed=0))
    assert len(batches) == 1 and batches[0][0].shape[0] == 2  # the remainder is dropped
    with pytest.raises(ValueError, match=r"images_per_batch=0: expected an integer >= 1"):
        detection_data.training_batches(images, images_per_batch=0, seed=0)

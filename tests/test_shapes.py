"""Tests for the shapes dataset family (utils.shapes, utils.backgrounds)."""

import dataclasses
import hashlib
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utils import shapes
from utils.backgrounds import BACKGROUND_SOURCES, load_background_sources


def _box_of(mask: np.ndarray) -> list[float]:
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    return [columns[0], rows[0], columns[-1] + 1, rows[-1] + 1]


@pytest.fixture(scope="module")
def detection():
    return shapes.make_shapes("detection", 120, difficulty="hard", seed=3, return_masks=True)


@pytest.mark.parametrize("variant", shapes.VARIANTS)
def test_same_arguments_give_identical_bytes(variant):
    first = shapes.make_shapes(variant, 12, seed=7, difficulty="hard")
    second = shapes.make_shapes(variant, 12, seed=7, difficulty="hard")
    assert first.images.tobytes() == second.images.tobytes()
    if variant == "detection":
        for a, b in zip(first.boxes + first.labels, second.boxes + second.labels, strict=True):
            assert a.tobytes() == b.tobytes()
    else:
        assert first.labels.tobytes() == second.labels.tobytes()
    other = shapes.make_shapes(variant, 12, seed=8, difficulty="hard")
    assert first.images.tobytes() != other.images.tobytes()


def test_known_checksum_pins_the_bytes_across_machines():
    # The generator's promise: these bytes on every machine. A change here changes
    # every dataset of the course (update it only on purpose, with the notebooks).
    classification = shapes.make_shapes("classification", 8, seed=0)
    data = shapes.make_shapes("detection", 4, difficulty="hard", seed=0)
    digest = hashlib.sha256(classification.images.tobytes() + classification.labels.tobytes())
    digest.update(data.images.tobytes())
    for boxes, labels in data.ground_truths():
        digest.update(boxes.tobytes() + labels.tobytes())
    assert digest.hexdigest()[:16] == "970bde7e4ba4ae2c"


def test_angle_table_is_far_from_rounding_ties():
    # The cos/sin table is rounded to 2**-30: a libm that is off in the last bit
    # cannot change it unless a value sits this close to a tie.
    for function in (math.cos, math.sin):
        for step in range(480):
            value = function(2 * math.pi * step / 480) * 2**30
            assert abs(value - math.floor(value) - 0.5) > 1e-3


def test_smaller_set_is_a_prefix_and_splits_differ():
    small = shapes.make_shapes("classification", 7, seed=2)
    large = shapes.make_shapes("classification", 23, seed=2)
    assert np.array_equal(small.images, large.images[:7])
    assert np.array_equal(small.labels, large.labels[:7])
    train, validation = shapes.make_shapes_split("classification", 30, 30, seed=2)
    assert np.array_equal(train.images, shapes.make_shapes("classification", 30, seed=2).images)
    train_bytes = {image.tobytes() for image in train.images}
    assert not train_bytes & {image.tobytes() for image in validation.images}


def test_localization_adds_boxes_to_the_classification_images():
    classification = shapes.make_shapes("classification", 10, seed=4)
    localization = shapes.make_shapes("localization", 10, seed=4)
    assert classification.boxes is None
    assert np.array_equal(classification.images, localization.images)
    assert np.array_equal(classification.labels, localization.labels)


@pytest.mark.parametrize("variant", ["classification", "localization"])
@pytest.mark.parametrize("difficulty", list(shapes.DIFFICULTIES))
def test_one_object_shapes_dtypes_and_tight_boxes(variant, difficulty):
    data = shapes.make_shapes(variant, 40, difficulty=difficulty, seed=5, return_masks=True)
    assert data.images.shape == (40, 64, 64, 3) and data.images.dtype == np.uint8
    assert data.labels.shape == (40,) and data.labels.dtype == np.int32
    assert data.masks.shape == (40, 64, 64) and data.masks.dtype == bool
    assert data.class_names == shapes.CLASS_NAMES
    if variant == "localization":
        assert data.boxes.shape == (40, 4) and data.boxes.dtype == np.float32
        for box, mask in zip(data.boxes, data.masks, strict=True):
            assert box.tolist() == _box_of(mask)


def test_detection_boxes_are_tight_around_visible_pixels(detection):
    assert detection.images.shape == (120, 128, 128, 3)
    for boxes, labels, masks in zip(
        detection.boxes, detection.labels, detection.masks, strict=True
    ):
        assert boxes.dtype == np.float32 and labels.dtype == np.int32
        assert boxes.shape == (len(labels), 4) and masks.shape == (len(labels), 128, 128)
        assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] <= 128)
        assert np.all(boxes[:, 2:] > boxes[:, :2])
        for box, mask in zip(boxes, masks, strict=True):
            assert box.tolist() == _box_of(mask)


def test_occlusion_rule_drops_exactly_the_heavily_occluded(detection):
    dropped = kept = 0
    for painted, labels, masks in zip(
        detection.painted, detection.labels, detection.masks, strict=True
    ):
        covered_later = np.zeros((128, 128), dtype=bool)
        expected_kept, visible_masks = [], []
        for own in painted.masks[::-1]:
            visible = own & ~covered_later
            covered_later |= own
            fraction = visible.sum() / own.sum()
            keep = fraction >= shapes.MIN_VISIBLE_FRACTION
            expected_kept.append(keep and visible.sum() >= shapes.MIN_VISIBLE_PIXELS)
            visible_masks.append(visible)
        expected_kept = np.array(expected_kept[::-1])
        visible_masks = visible_masks[::-1]
        assert np.array_equal(painted.kept, expected_kept)
        assert np.array_equal(painted.labels[painted.kept], labels)
        kept_masks = [mask for mask, keep in zip(visible_masks, expected_kept, strict=True) if keep]
        assert np.array_equal(np.array(kept_masks, dtype=bool).reshape(masks.shape), masks)
        if len(painted.labels):
            assert painted.kept[-1], "the last object painted is never occluded"
        dropped += int((~painted.kept).sum())
        kept += int(painted.kept.sum())
    assert dropped > 0 and kept > 0


def test_detection_object_counts_follow_the_arguments():
    data = shapes.make_shapes("detection", 60, min_objects=0, max_objects=2, seed=1)
    counts = [len(labels) for labels in data.labels]
    assert min(counts) == 0 and max(counts) <= 2
    boxes, labels, padded_counts = data.padded(4)
    assert boxes.shape == (60, 4, 4) and labels.shape == (60, 4)
    assert padded_counts.tolist() == counts
    assert np.all(labels[np.arange(4)[None, :] >= padded_counts[:, None]] == -1)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32),
    height=st.integers(67, 140),
    width=st.integers(67, 140),
)
def test_any_size_and_seed_gives_tight_boxes_inside_the_image(seed, height, width):
    data = shapes.make_shapes(
        "detection", 3, image_size=(height, width), seed=seed, return_masks=True
    )
    assert data.images.shape == (3, height, width, 3)
    for boxes, masks in zip(data.boxes, data.masks, strict=True):
        assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= width)
        assert np.all(boxes[:, [1, 3]] <= height)
        for box, mask in zip(boxes, masks, strict=True):
            assert box.tolist() == _box_of(mask)


def test_classes_are_balanced():
    data = shapes.make_shapes("classification", 1003, seed=9)
    assert sorted(np.bincount(data.labels).tolist()) == [200, 200, 201, 201, 201]
    for start in range(0, 1000, 5):
        assert sorted(data.labels[start : start + 5]) == [0, 1, 2, 3, 4]
    detection = shapes.make_shapes("detection", 400, seed=9)
    counts = np.bincount(np.concatenate(detection.labels), minlength=5)
    assert np.all(np.abs(counts - counts.mean()) < 0.2 * counts.mean()), counts


def test_class_subset_relabels_from_zero():
    data = shapes.make_shapes("classification", 20, classes=("star", "circle"), seed=0)
    assert data.class_names == ("star", "circle")
    assert set(data.labels.tolist()) == {0, 1}


def test_colour_is_independent_of_class():
    data = shapes.make_shapes("localization", 500, difficulty="easy", seed=6, return_masks=True)
    mean_colours = np.array([data.images[i][data.masks[i]].mean(axis=0) for i in range(len(data))])
    per_class = np.array([mean_colours[data.labels == k].mean(axis=0) for k in range(5)])
    assert np.ptp(per_class, axis=0).max() < 40, per_class


def test_backgrounds_load_offline_once():
    sources = load_background_sources()
    assert len(sources) == len(BACKGROUND_SOURCES) >= 8
    assert load_background_sources() is sources
    for pyramid in sources:
        assert all(level.dtype == np.uint8 and level.shape[2] == 3 for level in pyramid)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"variant": "segmentation"}, "variant='segmentation'"),
        ({"num_images": -1}, "num_images=-1"),
        ({"num_images": 2.5}, "num_images=2.5"),
        ({"image_size": 8}, "image_size=8"),
        ({"image_size": (64, 64, 3)}, r"image_size=\(64, 64, 3\)"),
        ({"image_size": 20, "difficulty": "hard"}, "smallest objects"),
        ({"difficulty": "extreme"}, "difficulty='extreme'"),
        ({"classes": ()}, "at least one class"),
        ({"classes": ("circle", "oval")}, "unknown"),
        ({"classes": ("circle", "circle")}, "at most once"),
        ({"seed": -3}, "seed=-3"),
        ({"split": "holdout"}, "split='holdout'"),
        ({"max_objects": 3}, "applies to variant='detection' only"),
        ({"variant": "detection", "min_objects": -1}, "min_objects=-1"),
        ({"variant": "detection", "min_objects": 4, "max_objects": 2}, "max_objects=2"),
    ],
)
def test_bad_arguments_raise_clear_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        shapes.make_shapes(**{"num_images": 2, **arguments})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("object_scale", (0.5, 1.2), "object_scale"),
        ("object_scale", (0.0, 0.5), "object_scale"),
        ("object_scale", (0.6, 0.5), "object_scale"),
        ("noise", -1.0, "noise=-1.0"),
        ("max_aspect", 0.5, "max_aspect=0.5"),
        ("distractors", (3, 1), "distractors"),
    ],
)
def test_bad_difficulty_raises_clear_errors(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(shapes.DIFFICULTIES["medium"], **{field: value})


def test_helpers_reject_misuse():
    classification = shapes.make_shapes("classification", 3)
    with pytest.raises(ValueError, match="no boxes"):
        classification.ground_truths()
    with pytest.raises(ValueError, match="variant='detection'"):
        classification.padded()
    with pytest.raises(ValueError, match="sets split itself"):
        shapes.make_shapes_split("classification", 2, 2, split="test")
    detection = shapes.make_shapes("detection", 5, min_objects=3, max_objects=3)
    with pytest.raises(ValueError, match="max_objects=1"):
        detection.padded(1)


def test_ground_truths_feed_mean_average_precision():
    localization = shapes.make_shapes("localization", 3, seed=1)
    truths = localization.ground_truths()
    assert len(truths) == 3 and truths[0][0].shape == (1, 4) and truths[0][1].shape == (1,)
    detection = shapes.make_shapes("detection", 3, seed=1)
    assert all(boxes.shape == (len(labels), 4) for boxes, labels in detection.ground_truths())


def test_tf_datasets_have_the_documented_elements():
    tf = pytest.importorskip("tensorflow")
    classification = shapes.to_tf_dataset(shapes.make_shapes("classification", 6), batch_size=4)
    images, labels = next(iter(classification))
    assert images.shape == (4, 64, 64, 3) and images.dtype == tf.uint8
    assert labels.shape == (4,) and labels.dtype == tf.int32

    localization = shapes.to_tf_dataset(shapes.make_shapes("localization", 3), shuffle=True)
    image, target = next(iter(localization))
    assert image.shape == (64, 64, 3)
    assert target["label"].dtype == tf.int32 and target["box"].shape == (4,)
    assert target["box"].dtype == tf.float32

    data = shapes.make_shapes("detection", 5, seed=2)
    detection = shapes.to_tf_dataset(data, batch_size=2, max_objects=6)
    images, target = next(iter(detection))
    assert images.shape == (2, 128, 128, 3)
    assert target["boxes"].shape == (2, 6, 4) and target["labels"].shape == (2, 6)
    assert target["count"].numpy().tolist() == [len(labels) for labels in data.labels[:2]]
    with pytest.raises(ValueError, match="batch_size=0"):
        shapes.to_tf_dataset(data, batch_size=0)


def test_generation_is_fast_enough():
    # A generous sanity bound, not the benchmark (10,000 images in ~4 s here).
    start = time.perf_counter()
    shapes.make_shapes("classification", 1000, seed=11)
    assert time.perf_counter() - start < 10

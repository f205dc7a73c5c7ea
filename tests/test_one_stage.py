"""utils.one_stage: targets against match_boxes, the loss and its shares, the model's shapes,
training, inference, the cached loader and bad input."""

import detection_helpers as helpers
import keras
import numpy as np
import pytest

from utils import boxes as box_ops
from utils import losses as losses_module
from utils import one_stage
from utils.matching import BACKGROUND, IGNORED, match_boxes
from utils.roi_heads import Detections
from utils.shapes import to_tf_dataset

STRIDE = 4
CLASSES, IMAGE_SIZE = helpers.TINY_CLASSES, helpers.TINY_IMAGE_SIZE


def tiny_model(**options):
    keras.utils.set_random_seed(0)
    settings = {
        **helpers.tiny_anchor_settings(STRIDE),
        "head_channels": 16,
    }
    settings.update(options)
    return one_stage.OneStageDetector(
        helpers.make_tiny_backbone(STRIDE, channels=16), len(CLASSES), **settings
    )


@pytest.fixture(scope="module")
def images():
    """Four 64x64 detection images with one or two objects each."""
    return helpers.tiny_detection_images(4)


@pytest.mark.parametrize("seed", range(5))
def test_anchor_targets_follow_match_boxes_on_random_scenes(seed):
    rng = np.random.default_rng(seed)
    anchors = np.asarray(tiny_model().anchors)
    corners = rng.uniform(0, 48, (4, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(6, 16, (4, 2))], 1).astype(np.float32)
    labels = np.array([0, 2, 1, -1])  # the last row is padding
    anchor_labels, targets = one_stage.anchor_targets(anchors, boxes, labels)
    overlaps = np.asarray(box_ops.iou(boxes[:3], anchors))
    matches = match_boxes(overlaps, 0.5, 0.4, allow_low_quality_matches=True)
    positive = matches >= 0
    np.testing.assert_array_equal(anchor_labels[positive], labels[matches[positive]] + 1)
    np.testing.assert_array_equal(anchor_labels[matches == -1], BACKGROUND)
    np.testing.assert_array_equal(anchor_labels[matches == -2], IGNORED)
    # The rule itself: positives reach 0.5 or are an object's best anchor; negatives stay < 0.4.
    best = overlaps.max(axis=0)
    best_of_a_box = (overlaps == overlaps.max(axis=1, keepdims=True)).any(axis=0)  # ties too
    assert np.all((best[positive] >= 0.5) | best_of_a_box[positive])
    assert np.all(best[anchor_labels == BACKGROUND] < 0.4)
    assert np.all(positive[best_of_a_box])
    decoded = np.asarray(box_ops.decode(targets[positive], anchors[positive]))
    np.testing.assert_allclose(decoded, boxes[matches[positive]], atol=1e-3)
    assert np.all(targets[~positive] == 0)


def test_anchor_targets_without_objects_are_all_background():
    anchors = np.asarray(tiny_model().anchors)
    labels, targets = one_stage.anchor_targets(anchors, np.zeros((0, 4)), np.zeros(0))
    assert np.all(labels == BACKGROUND) and not targets.any()


def test_model_outputs_shapes_and_prior(images):
    model = tiny_model()
    assert model.feature_size == (16, 16) and model.anchors.shape == (16 * 16 * 6, 4)
    outputs = model(images.images)
    assert tuple(outputs["class_logits"].shape) == (4, 16 * 16 * 6, len(CLASSES))
    assert tuple(outputs["box_deltas"].shape) == (4, 16 * 16 * 6, 4)
    probabilities = 1 / (1 + np.exp(-np.asarray(outputs["class_logits"])))
    assert abs(float(probabilities.mean()) - one_stage.PRIOR_PROBABILITY) < 0.005


def test_loss_normalises_by_positives_and_ignores_what_it_should():
    logits = np.zeros((1, 4, 2), np.float32)  # p = 0.5 everywhere
    labels = np.array([[2, BACKGROUND, IGNORED, 1]])
    deltas = np.zeros((1, 4, 4), np.float32)
    targets = np.zeros((1, 4, 4), np.float32)
    targets[0, 0] = [0.5, 0, 0, 0]
    losses = losses_module.one_stage_loss(logits, deltas, labels, targets, alpha=None, gamma=0.0)
    # Three non-ignored anchors x 2 classes of log(2), over 2 positives.
    np.testing.assert_allclose(float(losses["class_loss"]), 6 * np.log(2) / 2, rtol=1e-5)
    smooth = 0.5 - 0.5 * losses_module.SMOOTH_L1_BETA
    np.testing.assert_allclose(float(losses["box_loss"]), smooth / 2, rtol=1e-5)


def test_easy_negatives_dominate_cross_entropy_but_not_focal_loss():
    rng = np.random.default_rng(0)
    labels = np.full(2000, BACKGROUND)
    labels[:10] = 1
    logits = np.full((2000, 3), -4.6, np.float32)  # p = 0.01: the prior, easy negatives
    logits[:10, 0] = rng.normal(0.0, 1.0, 10)
    plain = losses_module.loss_shares(logits, labels, alpha=0.5, gamma=0.0)
    focal = losses_module.loss_shares(logits, labels, alpha=0.25, gamma=2.0)
    for shares in (plain, focal):
        total = shares["positives"] + shares["hard_negatives"] + shares["easy_negatives"]
        assert abs(total - 1) < 1e-6 and shares["pairs"] == 6000
    assert plain["easy_negatives"] > 0.5 > focal["easy_negatives"]


def test_a_short_training_lowers_the_loss(images):
    model = tiny_model()
    recipe = one_stage.OneStageRecipe(images_per_batch=4, epochs=8, learning_rate=3e-3)
    history = one_stage.train_one_stage(model, images, recipe, verbose=False)
    assert set(history) == {"loss", "class_loss", "box_loss"}
    assert history["loss"][-1] < 0.8 * history["loss"][0]


def test_detect_gives_detections_and_the_timing_splits_three_stages(images):
    model = tiny_model()
    detections = one_stage.detect(model, images.images[0])
    assert isinstance(detections, Detections)
    assert len(detections) <= one_stage.MAX_DETECTIONS
    assert np.all(detections.scores > one_stage.SCORE_THRESHOLD)
    results, timing = one_stage.detect_images(model, images.images[:2], progress=False)
    assert len(results) == 2
    assert set(timing) == helpers.TIMING_KEYS
    assert timing["total"] == pytest.approx(timing["detection"])


def test_postprocess_keeps_a_confident_anchor_and_its_box():
    anchors = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    scores = np.array([[0.01, 0.9], [0.02, 0.03]], np.float32)
    deltas = np.zeros((2, 4), np.float32)
    detections = one_stage.postprocess(scores, deltas, anchors, (64, 64))
    np.testing.assert_allclose(detections.boxes, anchors[:1])
    assert list(detections.labels) == [1] and detections.scores[0] == pytest.approx(0.9)


def test_model_round_trips_through_keras_saving(tmp_path, images):
    model = tiny_model(alpha=0.5, gamma=0.0)
    path = tmp_path / "one_stage.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.alpha, loaded.gamma) == (0.5, 0.0)
    np.testing.assert_allclose(
        np.asarray(model(images.images)["class_logits"]),
        np.asarray(loaded(images.images)["class_logits"]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_fit_takes_the_shared_detection_batches(images):
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    dataset = to_tf_dataset(images, batch_size=2, max_objects=2)
    logs = model.fit(dataset, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0])


def test_load_one_stage_trains_on_a_miss_then_loads(tiny_detector_cache, capsys, images):
    recipe = one_stage.OneStageRecipe(head_channels=8, anchor_sizes=(12, 24), epochs=1)
    settings = one_stage.OneStageSettings(2, recipe)
    folder = tiny_detector_cache(one_stage.ONE_STAGE, settings, STRIDE)

    def outputs(model):
        return [np.asarray(model(images.images[:1])["class_logits"])]

    def load(**options):
        return one_stage.load_one_stage("cross_entropy", **options)

    info = helpers.check_cached_loader(load, folder, capsys, outputs)
    assert info.path.name.startswith("one_stage_cross_entropy-")
    assert info.settings.recipe.gamma == 0.0 and info.training_size == 2
    focal = one_stage.ONE_STAGE.cache_path("fast", settings)
    plain = one_stage.ONE_STAGE.cache_path(
        "fast", one_stage.OneStageSettings(2, recipe.with_loss("cross_entropy"))
    )
    assert focal != plain and plain == info.path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: one_stage.OneStageRecipe(gamma=-1.0), r"gamma=-1\.0: expected"),
        (lambda: one_stage.OneStageRecipe(alpha=2.0), r"alpha=2\.0: expected"),
        (lambda: one_stage.OneStageRecipe(epochs=0), r"epochs=0: expected an integer >= 1"),
        (lambda: one_stage.OneStageRecipe().with_loss("hinge"), r"loss='hinge': expected"),
        (lambda: tiny_model(head_channels=0), r"channels=0: expected an integer >= 1"),
        (
            lambda: one_stage.detect(tiny_model(), np.zeros((32, 32, 3), np.uint8)),
            r"expected",
        ),
        (
            lambda: one_stage.anchor_targets(np.zeros((3, 4)), np.zeros((2, 4)), [0]),
            r"labels has 1 entries and boxes 2 rows",
        ),
        (
            lambda: losses_module.loss_shares(np.zeros((5, 3)), np.zeros(4)),
            r"class_logits has shape \(5, 3\) and anchor_labels \(4,\)",
        ),
        (
            lambda: one_stage.postprocess(
                np.zeros((3, 2)), np.zeros((3, 4)), np.zeros((4, 4)), (8, 8)
            ),
            r"scores has shape \(3, 2\): expected \[4, K\]",
        ),
    ],
)
def test_bad_input_gets_one_line_errors(make, message):
    with pytest.raises(ValueError, match=message) as error:
        make()
    assert "\n" not in str(error.value)

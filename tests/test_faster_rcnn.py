"""utils.faster_rcnn: the joint model's outputs, training, inference, saving and the loader."""

import keras
import numpy as np
import pytest
from detection_helpers import (
    TINY_CLASSES,
    TINY_IMAGE_SIZE,
    check_cached_loader,
    make_tiny_backbone,
    tiny_anchor_settings,
    tiny_detection_images,
)

from utils import faster_rcnn
from utils.detection_data import detection_validation_set
from utils.roi_heads import Detections, TrainingRecipe
from utils.shapes import make_shapes, to_tf_dataset

STRIDE = 4
CLASSES, IMAGE_SIZE = TINY_CLASSES, TINY_IMAGE_SIZE


def tiny_backbone():
    return make_tiny_backbone(STRIDE, channels=16)


def tiny_model(**options):
    keras.utils.set_random_seed(0)
    settings = {
        **tiny_anchor_settings(STRIDE),
        "pre_nms_top_n": {"training": 200, "inference": 100},
        "post_nms_top_n": {"training": 40, "inference": 20},
        "rpn_samples_per_image": 64,
        "roi_samples_per_image": 16,
        "pool_size": 2,
        "hidden_units": (16,),
    }
    settings.update(options)
    return faster_rcnn.FasterRCNN(tiny_backbone(), len(CLASSES), **settings)


@pytest.fixture(scope="module")
def images():
    """Two 64x64 detection images with one or two objects each."""
    return tiny_detection_images(2)


def test_model_outputs_and_anchors(images):
    model = tiny_model()
    assert model.feature_size == (16, 16) and model.anchors.shape == (16 * 16 * 6, 4)
    outputs = model(images.images)
    shapes = {key: tuple(value.shape) for key, value in outputs.items()}
    assert shapes == {
        "proposals": (2, 20, 4),
        "proposal_scores": (2, 20),
        "proposal_valid": (2, 20),
        "class_probabilities": (2, 20, 4),
        "box_deltas": (2, 20, 12),
    }
    np.testing.assert_allclose(np.sum(outputs["class_probabilities"], axis=-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="expected a feature map"):
        pooled = keras.Sequential([tiny_backbone(), keras.layers.GlobalAveragePooling2D()])
        faster_rcnn.FasterRCNN(pooled, 3, feature_stride=4, image_size=(64, 64))
    with pytest.raises(ValueError, match="pre_nms_top_n="):
        tiny_model(pre_nms_top_n={"train": 10})


def test_joint_losses_are_finite_and_positive(images):
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    boxes, labels, _ = images.padded(3)
    model.optimizer.build(model.trainable_variables)
    losses = model.batch_losses(images.images, boxes, labels)
    assert set(losses) == set(faster_rcnn.LOSS_NAMES)
    assert all(np.isfinite(float(v)) and float(v) >= 0 for v in losses.values())


def test_one_image_overfit_lowers_the_loss(images):
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    one = make_shapes(
        "detection", 1, image_size=IMAGE_SIZE, difficulty="easy", seed=3, classes=CLASSES
    )
    dataset = to_tf_dataset(one, batch_size=1).repeat(40)
    history = model.fit(dataset, epochs=2, shuffle=False, verbose=0).history
    steps = [model.batch_losses(one.images, *one.padded()[:2])]
    assert set(history) == {"loss", *faster_rcnn.LOSS_NAMES}
    assert np.isfinite(history["loss"]).all()
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    final = sum(float(v) for v in steps[0].values())
    assert final < history["loss"][0]


def test_inference_format(images):
    model = tiny_model()
    detections, timing = faster_rcnn.detect_images(
        model, images.images, progress=False, score_threshold=0.0, max_detections=7
    )
    assert len(detections) == 2
    for result in detections:
        assert isinstance(result, Detections) and 0 < len(result) <= 7
        boxes, labels, scores = result
        assert boxes.dtype == np.float32 and labels.dtype == np.int64 and scores.dtype == np.float32
        assert boxes.shape == (len(result), 4) and (np.diff(scores) <= 0).all()
        assert ((boxes >= 0) & (boxes <= IMAGE_SIZE)).all() and set(labels.tolist()) <= {0, 1, 2}
    assert set(timing) == {
        "backbone",
        "rpn",
        "head",
        "postprocess",
        "total",
        "detection",
        "proposals_per_image",
    }
    assert timing["total"] == pytest.approx(timing["detection"] + timing["rpn"])
    assert 0 < timing["proposals_per_image"] <= 20
    single = faster_rcnn.detect(model, images.images[1], score_threshold=0.0, max_detections=7)
    np.testing.assert_allclose(single.scores, detections[1].scores, rtol=1e-5)
    proposals = model.rpn_proposals(images.images, top_n=5)
    assert [p.shape for p in proposals] == [(5, 4), (5, 4)]
    wrong = [
        images.images.astype(np.float32),  # float pixels
        images.images[0],  # one image without its batch axis
        images.images[:, :32],  # another size
    ]
    for bad in wrong:
        with pytest.raises(ValueError, match=r"images has shape .* expected RGB uint8 \[N, "):
            faster_rcnn.detect_images(model, bad, progress=False)
        with pytest.raises(ValueError, match="images has shape"):
            model.rpn_proposals(bad)


def test_saved_model_round_trip(tmp_path, images):
    model = tiny_model()
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert isinstance(loaded, faster_rcnn.FasterRCNN) and loaded.anchor_sizes == (12.0, 24.0)
    first, second = model(images.images), loaded(images.images)
    for key in first:
        np.testing.assert_allclose(first[key], second[key], rtol=1e-5, atol=1e-6)


MIRRORED_TRAINING = """
import json, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
import keras

sys.path[:0] = [".", "tests"]
from tests.test_faster_rcnn import CLASSES, IMAGE_SIZE, tiny_model
from utils.shapes import make_shapes, to_tf_dataset

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
data = make_shapes(
    "detection", 8, image_size=IMAGE_SIZE, difficulty="easy", seed=5, classes=CLASSES,
    max_objects=3,
)
with strategy.scope():
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
history = model.fit(to_tf_dataset(data, batch_size=4, max_objects=3), epochs=2, verbose=0)
mirrored = [v.value for v in model.trainable_variables]  # the tf.distribute variables
disagreement = max(
    float(np.max(np.abs(v.values[0].numpy() - v.values[1].numpy()))) for v in mirrored
)
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "history": history.history,
    "disagreement": disagreement,
    "steps": int(model.optimizer.iterations.numpy()),
    "mirrored": all(len(v.values) == 2 for v in mirrored),
}))
"""


def test_training_runs_unchanged_under_mirrored_strategy():
    """Two logical CPU devices stand in for two GPUs; set up in a fresh interpreter."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_TRAINING],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["steps"] == 4 and report["mirrored"]
    losses = report["history"]["loss"]
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert all(np.isfinite(report["history"][name]).all() for name in faster_rcnn.LOSS_NAMES)
    assert report["disagreement"] == 0.0  # every replica holds the same weights


# ---- the cached loader ------------------------------------------------------------------


def test_load_faster_rcnn_trains_on_a_miss_then_loads(tiny_detector_cache, capsys):
    recipe = TrainingRecipe(pool_size=2, hidden_units=(8,), rois_per_image=8, epochs=1)
    settings = faster_rcnn.FasterRCNNSettings(2, recipe, rpn_samples_per_image=32)
    folder = tiny_detector_cache(faster_rcnn.FASTER_RCNN, settings, STRIDE)
    image = detection_validation_set(1).images

    def outputs(model):
        result = model(image)
        return [result[key] for key in sorted(result)]

    info = check_cached_loader(faster_rcnn.load_faster_rcnn, folder, capsys, outputs)
    assert info.training_size == 2 and set(info.history) == {"loss", *faster_rcnn.LOSS_NAMES}
    assert faster_rcnn.FASTER_RCNN.cache_path("fast") != faster_rcnn.FASTER_RCNN.cache_path("full")

"""utils.backbone: the cached course backbone (through utils.cache), its shapes and copies."""

import numpy as np
import pytest

from utils import backbone as course_backbone
from utils.backbone import (
    FEATURE_CHANNELS,
    FEATURE_STRIDE,
    SETTINGS,
    STAGE_NAMES,
    TOP_STAGE_PREFIX,
    BackboneSettings,
    backbone_identity,
    cache_path,
    load_course_backbone,
)
from utils.course import DATA_DIR

TINY = BackboneSettings(num_train=40, num_validation=10, epochs=1, batch_size=20)


@pytest.fixture(scope="module")
def trained_cache(tmp_path_factory):
    """A cache directory holding a backbone trained once with the tiny settings."""
    directory = tmp_path_factory.mktemp("trained")
    load_course_backbone(False, mode="fast", directory=directory, settings=TINY)
    return directory


def test_cache_miss_trains_saves_and_says_so(tmp_path, capsys):
    backbone = load_course_backbone(mode="fast", directory=tmp_path, settings=TINY)
    out = capsys.readouterr().out.splitlines()
    assert backbone.source == "trained" and len(out) == 2
    assert "no cached model, training on 40 shapes images" in out[0]
    assert "validation accuracy" in out[1] and "cached to" in out[1]
    assert backbone.path == cache_path("fast", tmp_path, TINY) and backbone.path.exists()
    assert backbone.path.name.startswith("course_backbone-fast-")
    assert 0.0 <= backbone.validation_accuracy <= 1.0
    assert backbone.metadata["settings"]["num_train"] == TINY.num_train


def test_cache_hit_loads_the_same_weights(trained_cache, capsys):
    first = load_course_backbone(False, mode="fast", directory=trained_cache, settings=TINY)
    backbone = load_course_backbone(mode="fast", directory=trained_cache, settings=TINY)
    out = capsys.readouterr().out
    assert backbone.source == first.source == "cache"
    assert out.count("\n") == 1 and "loaded" in out and "validation accuracy" in out
    for a, b in zip(first.classifier.get_weights(), backbone.classifier.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_modes_and_recipes_use_different_files():
    assert cache_path("full").parent == DATA_DIR
    assert cache_path("full") != cache_path("fast")
    assert backbone_identity("fast") != backbone_identity("full")
    assert backbone_identity("fast") == backbone_identity("fast", SETTINGS["fast"])
    assert cache_path("fast", settings=TINY) != cache_path("fast")


def test_feature_stride_and_channels_on_detection_images(trained_cache):
    backbone = load_course_backbone(False, mode="fast", directory=trained_cache, settings=TINY)
    assert (backbone.stride, backbone.channels) == (FEATURE_STRIDE, FEATURE_CHANNELS) == (8, 128)
    images = np.zeros((2, 128, 128, 3), dtype=np.uint8)
    assert tuple(backbone.features(images).shape) == (2, 16, 16, 128)
    assert tuple(backbone.features(np.zeros((1, 64, 96, 3), np.uint8)).shape) == (1, 8, 12, 128)
    assert tuple(backbone.features(np.zeros((1, 100, 60, 3), np.uint8)).shape) == (1, 13, 8, 128)
    assert tuple(backbone.classifier(np.zeros((3, 64, 64, 3), np.uint8)).shape) == (3, 5)
    assert backbone.classifier.layers[1].name == "rescale"  # preprocessing is inside


def test_stage_maps_have_strides_2_4_8_8(trained_cache):
    backbone = load_course_backbone(False, mode="fast", directory=trained_cache, settings=TINY)
    maps = backbone.stage_model()(np.zeros((1, 64, 64, 3), np.uint8))
    assert [tuple(m.shape[1:3]) for m in maps] == [(32, 32), (16, 16), (8, 8), (8, 8)]
    assert len(maps) == len(STAGE_NAMES)
    assert any(layer.name.startswith(TOP_STAGE_PREFIX) for layer in backbone.features.layers)


def test_clone_features_copies_or_reinitialises(trained_cache):
    backbone = load_course_backbone(False, mode="fast", directory=trained_cache, settings=TINY)
    copy = backbone.clone_features()
    fresh = backbone.clone_features(pretrained=False)
    kernel = backbone.features.get_layer("stem_conv").kernel
    np.testing.assert_array_equal(copy.get_layer("stem_conv").kernel.numpy(), kernel.numpy())
    assert not np.array_equal(fresh.get_layer("stem_conv").kernel.numpy(), kernel.numpy())
    before = kernel.numpy().copy()
    copy.get_layer("stem_conv").kernel.assign(np.zeros_like(before))
    np.testing.assert_array_equal(kernel.numpy(), before)


def test_a_cache_that_is_no_backbone_is_refused(tmp_path, capsys):
    import keras

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="features")(inputs))
    with pytest.raises(ValueError, match="feature channels"):
        course_backbone._check_classifier(model, {"validation_accuracy": 1.0})


@pytest.mark.parametrize(
    ("field", "value"), [("num_train", 0), ("epochs", 1.5), ("batch_size", True)]
)
def test_settings_reject_bad_values(field, value):
    options = {"num_train": 10, "num_validation": 10, "epochs": 1, field: value}
    with pytest.raises(ValueError, match=field):
        BackboneSettings(**options)


def test_describe_recipe_states_the_settings_of_the_mode():
    from utils.backbone import SETTINGS, backbone_identity, describe_recipe

    text = describe_recipe("full")
    settings = SETTINGS["full"]
    assert f"{settings.num_train:,} training" in text and backbone_identity("full") in text
    assert f"{settings.epochs} epoch(s)" in text and "cosine" in text
    assert "BackboneSettings(num_train=" in text
    assert describe_recipe("fast") != text

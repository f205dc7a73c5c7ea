"""utils.backbone: the cached course backbone (cache hit, miss, corrupted cache, shapes)."""

import json
import shutil

import numpy as np
import pytest

from utils import backbone as course_backbone
from utils.backbone import (
    FEATURE_CHANNELS,
    FEATURE_STRIDE,
    STAGE_NAMES,
    TOP_STAGE_PREFIX,
    TrainingPlan,
    backbone_identity,
    cache_path,
    load_course_backbone,
)
from utils.course import DATA_DIR

TINY_PLAN = TrainingPlan(num_train=40, num_validation=10, epochs=1, batch_size=20)


@pytest.fixture(scope="module")
def trained_cache(tmp_path_factory):
    """A cache directory holding a backbone trained once with the tiny plan."""
    directory = tmp_path_factory.mktemp("trained")
    load_course_backbone(False, fast=True, directory=directory, plan=TINY_PLAN)
    return directory


@pytest.fixture
def cache(trained_cache, tmp_path):
    """A private copy of the trained cache, free to damage."""
    for path in trained_cache.iterdir():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def test_cache_miss_trains_saves_and_says_so(tmp_path, capsys):
    backbone = load_course_backbone(fast=True, directory=tmp_path, plan=TINY_PLAN)
    out = capsys.readouterr().out
    assert backbone.source == "trained"
    assert out.count("\n") == 1
    assert "no cache, training it" in out and "saved to" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "course_backbone_fast.json",
        "course_backbone_fast.keras",
    ]
    metadata = json.loads((tmp_path / "course_backbone_fast.json").read_text())
    assert 0.0 <= metadata["validation_accuracy"] <= 1.0
    assert metadata["plan"]["num_train"] == TINY_PLAN.num_train
    assert backbone.validation_accuracy == metadata["validation_accuracy"]


def test_cache_hit_loads_the_same_weights(cache, trained_cache, capsys):
    first = load_course_backbone(False, fast=True, directory=trained_cache, plan=TINY_PLAN)
    backbone = load_course_backbone(fast=True, directory=cache, plan=TINY_PLAN)
    out = capsys.readouterr().out
    assert backbone.source == "cache"
    assert out.count("\n") == 1 and "loaded" in out and "validation accuracy" in out
    for a, b in zip(first.classifier.get_weights(), backbone.classifier.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("damage", ["truncated model", "garbage model", "garbage json", "no json"])
def test_corrupted_cache_says_why_and_retrains(cache, capsys, damage):
    model_path, metadata_path = (
        cache / "course_backbone_fast.keras",
        cache / "course_backbone_fast.json",
    )
    if damage == "truncated model":
        model_path.write_bytes(model_path.read_bytes()[:1000])
    elif damage == "garbage model":
        model_path.write_bytes(b"not a keras file")
    elif damage == "garbage json":
        metadata_path.write_text("{")
    else:
        metadata_path.unlink()
    backbone = load_course_backbone(fast=True, directory=cache, plan=TINY_PLAN)
    out = capsys.readouterr().out
    assert backbone.source == "trained"
    assert out.count("\n") == 1
    assert "course_backbone_fast.keras could not be used (" in out
    assert "training it" in out and "Traceback" not in out
    # The retrained cache is whole again: the next call loads it.
    assert load_course_backbone(False, fast=True, directory=cache, plan=TINY_PLAN).source == "cache"
    assert not [p for p in cache.iterdir() if ".tmp." in p.name]


def test_another_recipe_retrains(cache, capsys):
    other = TrainingPlan(num_train=20, num_validation=10, epochs=1, batch_size=20)
    backbone = load_course_backbone(fast=True, directory=cache, plan=other)
    assert backbone.source == "trained"
    assert "trained by recipe" in capsys.readouterr().out


def test_fast_and_full_modes_use_different_files():
    assert cache_path(fast=False) == DATA_DIR / "course_backbone.keras"
    assert cache_path(fast=True) == DATA_DIR / "course_backbone_fast.keras"
    assert backbone_identity(True) != backbone_identity(False)
    assert backbone_identity(True) == backbone_identity(True)


def test_feature_stride_and_channels_on_detection_images(trained_cache):
    backbone = load_course_backbone(False, fast=True, directory=trained_cache, plan=TINY_PLAN)
    assert (backbone.stride, backbone.channels) == (FEATURE_STRIDE, FEATURE_CHANNELS) == (8, 128)
    images = np.zeros((2, 128, 128, 3), dtype=np.uint8)
    assert tuple(backbone.features(images).shape) == (2, 16, 16, 128)
    assert tuple(backbone.features(np.zeros((1, 64, 96, 3), np.uint8)).shape) == (1, 8, 12, 128)
    assert tuple(backbone.features(np.zeros((1, 100, 60, 3), np.uint8)).shape) == (1, 13, 8, 128)
    assert tuple(backbone.classifier(np.zeros((3, 64, 64, 3), np.uint8)).shape) == (3, 5)
    assert backbone.classifier.layers[1].name == "rescale"  # preprocessing is inside


def test_stage_maps_have_strides_2_4_8_8(trained_cache):
    backbone = load_course_backbone(False, fast=True, directory=trained_cache, plan=TINY_PLAN)
    maps = backbone.stage_model()(np.zeros((1, 64, 64, 3), np.uint8))
    assert [tuple(m.shape[1:3]) for m in maps] == [(32, 32), (16, 16), (8, 8), (8, 8)]
    assert len(maps) == len(STAGE_NAMES)
    assert any(layer.name.startswith(TOP_STAGE_PREFIX) for layer in backbone.features.layers)


def test_clone_features_copies_or_reinitialises(trained_cache):
    backbone = load_course_backbone(False, fast=True, directory=trained_cache, plan=TINY_PLAN)
    copy = backbone.clone_features()
    fresh = backbone.clone_features(pretrained=False)
    kernel = backbone.features.get_layer("stem_conv").kernel
    np.testing.assert_array_equal(copy.get_layer("stem_conv").kernel.numpy(), kernel.numpy())
    assert not np.array_equal(fresh.get_layer("stem_conv").kernel.numpy(), kernel.numpy())
    before = kernel.numpy().copy()
    copy.get_layer("stem_conv").kernel.assign(np.zeros_like(before))
    np.testing.assert_array_equal(kernel.numpy(), before)


def test_cache_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    """A failure while saving leaves neither a half file nor a temporary one."""
    classifier = course_backbone.build_backbone_classifier()
    path = tmp_path / "course_backbone.keras"

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(classifier), "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        course_backbone._write_cache(classifier, {"identity": "x"}, path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value"), [("num_train", 0), ("epochs", 1.5), ("batch_size", True)]
)
def test_training_plan_rejects_bad_values(field, value):
    options = {"num_train": 10, "num_validation": 10, "epochs": 1, field: value}
    with pytest.raises(ValueError, match=field):
        TrainingPlan(**options)

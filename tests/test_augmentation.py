"""utils.augmentation: one recipe builds both implementations with the same ranges."""

import keras
import numpy as np
import pytest

from utils.augmentation import (
    AugmentationRecipe,
    image_sharpness,
    overfitting_summary,
    train_variant,
)


def test_image_data_generator_gets_the_recipe():
    recipe = AugmentationRecipe(rotation_degrees=30, shift_fraction=0.2, zoom_fraction=0.1)
    generator = recipe.image_data_generator(brightness_range=(0.8, 1.2))
    assert generator.rotation_range == 30
    assert generator.width_shift_range == generator.height_shift_range == 0.2
    assert list(generator.zoom_range) == [0.9, 1.1]
    assert generator.horizontal_flip and not generator.vertical_flip
    assert generator.fill_mode == "reflect" and generator.brightness_range == (0.8, 1.2)
    with pytest.raises(ValueError, match=r"options \['rotation_range'\]"):
        recipe.image_data_generator(rotation_range=5)


def test_preprocessing_layers_get_the_recipe_and_distinct_seeds():
    recipe = AugmentationRecipe(rotation_degrees=36, shift_fraction=0.2, zoom_fraction=0.1)
    augmentation = recipe.preprocessing_layers(seed=7, interpolation="nearest")
    flip, rotation, translation, zoom = augmentation.layers
    assert [type(layer).__name__ for layer in augmentation.layers] == [
        "RandomFlip",
        "RandomRotation",
        "RandomTranslation",
        "RandomZoom",
    ]
    assert [layer.seed for layer in augmentation.layers] == [7, 8, 9, 10]
    assert rotation.factor == pytest.approx((-0.1, 0.1))  # 36 degrees of 360
    assert translation.height_factor == translation.width_factor == 0.2
    assert zoom.height_factor == zoom.width_factor == (-0.1, 0.1)
    assert rotation.interpolation == "nearest" and zoom.fill_mode == "reflect"


def test_layers_augment_in_training_only_and_repeat_with_a_seed():
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    recipe = AugmentationRecipe()
    first = np.asarray(recipe.preprocessing_layers(seed=1)(images, training=True))
    again = np.asarray(recipe.preprocessing_layers(seed=1)(images, training=True))
    assert first.shape == images.shape and not np.allclose(first, images)
    np.testing.assert_array_equal(first, again)
    unchanged = recipe.preprocessing_layers(seed=1)(images, training=False)
    np.testing.assert_array_equal(np.asarray(unchanged), images)


def test_a_recipe_without_ranges_is_the_identity():
    recipe = AugmentationRecipe(0, 0, 0, horizontal_flip=False)
    augmentation = recipe.preprocessing_layers()
    assert [type(layer) for layer in augmentation.layers] == [keras.layers.Identity]
    images = np.ones((2, 8, 8, 3), "float32")
    np.testing.assert_array_equal(np.asarray(augmentation(images, training=True)), images)


def test_bad_recipes_are_named():
    with pytest.raises(ValueError, match=r"rotation_degrees=-1: expected a number in \[0, 180"):
        AugmentationRecipe(rotation_degrees=-1)
    with pytest.raises(ValueError, match=r"zoom_fraction=1.5"):
        AugmentationRecipe(zoom_fraction=1.5)
    with pytest.raises(ValueError, match=r"horizontal_flip=1"):
        AugmentationRecipe(horizontal_flip=1)
    with pytest.raises(ValueError, match=r"fill_mode='mirror'"):
        AugmentationRecipe(fill_mode="mirror")
    with pytest.raises(ValueError, match=r"seed=-3"):
        AugmentationRecipe().preprocessing_layers(seed=-3)
    with pytest.raises(ValueError, match=r"interpolation='cubic'"):
        AugmentationRecipe().preprocessing_layers(interpolation="cubic")


def test_image_sharpness_drops_with_blur():
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, (3, 12, 12, 3))
    assert image_sharpness(np.full((2, 5, 5), 7.0)) == 0.0
    blurred = (
        images[:, :-1, :-1] + images[:, 1:, :-1] + images[:, :-1, 1:] + images[:, 1:, 1:]
    ) / 4
    assert image_sharpness(blurred) < image_sharpness(images)
    # One bright pixel in a 3x3 grey image: |4 * 1| at the only interior pixel.
    spike = np.zeros((1, 3, 3))
    spike[0, 1, 1] = 1
    assert image_sharpness(spike) == 4.0
    with pytest.raises(ValueError, match=r"images has shape \(4, 4\)"):
        image_sharpness(np.zeros((4, 4)))


def _tiny_classifier():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


def test_train_variant_repeats_itself_and_summarises_the_gap():
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 3)).astype("float32")
    y = (x[:, 0, 0, 0] > 0.5).astype("int32")
    runs = [
        train_variant(_tiny_classifier, x, (x, y), epochs=2, seed=3, y=y, batch_size=8)
        for _ in range(2)
    ]
    assert len(runs[0].history["val_accuracy"]) == 2 and runs[0].seconds_per_epoch > 0
    np.testing.assert_array_equal(runs[0].history["loss"], runs[1].history["loss"])
    summary = overfitting_summary(runs[0], x, y)
    assert set(summary) == {"train", "validation", "gap", "best validation"}
    assert summary["gap"] == pytest.approx(summary["train"] - summary["validation"])
    with pytest.raises(ValueError, match=r"epochs=0"):
        train_variant(_tiny_classifier, x, (x, y), epochs=0, seed=0)
    with pytest.raises(ValueError, match=r"build=3"):
        train_variant(3, x, (x, y), epochs=1, seed=0)

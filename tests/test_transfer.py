"""utils.transfer: the counting task, heads on frozen features, fine-tuning, baselines."""

import keras
import numpy as np
import pytest

from utils.resnet import build_small_resnet
from utils.transfer import (
    LabelledImages,
    Run,
    accuracy,
    build_head,
    build_small_cnn,
    fit_and_measure,
    make_count_task,
    pooled_features,
    runs_table,
    stage_extractor,
    trainable_count,
    unfreeze_top,
    with_head,
)


def _tiny_resnet():
    keras.utils.set_random_seed(0)
    return build_small_resnet(stem_width=4, stage_widths=(4, 8), stage_strides=(2, 1))


def test_count_task_labels_are_the_number_of_labelled_shapes():
    train, validation = make_count_task(12, 6, max_objects=3, image_size=72, seed=1)
    assert isinstance(train, LabelledImages) and len(train) == 12 and len(validation) == 6
    assert train.images.shape == (12, 72, 72, 3) and train.images.dtype == np.uint8
    assert train.class_names == ("1", "2", "3")
    assert train.labels.dtype == np.int32 and set(train.labels) <= {0, 1, 2}
    from utils.shapes import make_shapes

    detection = make_shapes(
        "detection", 12, image_size=72, min_objects=1, max_objects=3, seed=1, split="train"
    )
    np.testing.assert_array_equal(train.labels, [len(labels) - 1 for labels in detection.labels])
    np.testing.assert_array_equal(train.images, detection.images)


def test_count_task_checks_its_arguments():
    with pytest.raises(ValueError, match="max_objects"):
        make_count_task(4, 4, max_objects=1)
    with pytest.raises(ValueError, match="num_train"):
        make_count_task(0, 4)


def test_stage_extractor_and_pooled_features():
    model = _tiny_resnet()
    extractor = stage_extractor(model, "stage1_out")
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    features = pooled_features(extractor, images, batch_size=2)
    maps = keras.ops.convert_to_numpy(extractor(images, training=False))
    np.testing.assert_allclose(features, maps.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    assert pooled_features(extractor, images, size=32).shape == (3, 4)
    doubled = pooled_features(extractor, images, preprocess=lambda x: x * 0)
    assert doubled.shape == (3, 4)
    with pytest.raises(ValueError, match="layer_name"):
        stage_extractor(model, "no_such_layer")


def test_head_size_and_frozen_model_in_inference_mode():
    model = _tiny_resnet()
    features = keras.Model(model.input, model.get_layer("features").output)
    head = build_head(8, 3)
    assert trainable_count(head) == 8 * 3 + 3
    joined = with_head(features, head, frozen=True)
    assert len(joined.trainable_weights) == 2
    assert trainable_count(joined) == 27
    images = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    # frozen: BatchNorm in inference mode even when the model is called in training mode
    np.testing.assert_allclose(
        joined(images, training=True), joined(images, training=False), rtol=1e-5, atol=1e-6
    )


def test_unfreeze_top_adds_exactly_the_top_stage():
    model = _tiny_resnet()
    features = keras.Model(model.input, model.get_layer("features").output)
    joined = with_head(features, build_head(8, 3), frozen=True)
    unfrozen = unfreeze_top(features, "stage2_")
    # stage2 (4 -> 8 channels): conv1, conv2, proj kernels + three BatchNorms (gamma, beta)
    assert len(unfrozen) == 9
    assert len(joined.trainable_weights) == 2 + 9
    with pytest.raises(ValueError, match="prefix"):
        unfreeze_top(features, "no_such_stage")


def test_small_cnn_flips_keep_counts_and_sizes():
    plain = build_small_cnn(4, augment=False)
    augmented = build_small_cnn(4, augment=True)
    assert trainable_count(plain) == trainable_count(augmented)
    assert "flips" in [layer.name for layer in augmented.layers]
    assert augmented.output.shape[-1] == 4


def test_fit_and_measure_learns_an_easy_task_and_measures_in_inference_mode():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    head = build_head(5, 2)
    run = fit_and_measure(head, (x, y), (x, y), epochs=150, learning_rate=0.05, batch_size=64)
    assert isinstance(run, Run) and run.trainable == 12
    assert run.validation == run.training == accuracy(head, x, y) > 0.9
    assert 0.0 <= run.fit_training <= 1.0 and run.seconds > 0
    with pytest.raises(ValueError, match="epochs"):
        fit_and_measure(head, (x, y), (x, y), epochs=0, learning_rate=0.1)


def test_runs_table_gives_mean_and_spread_per_method():
    runs = {
        "a": {0: Run(0.5, 0.6, 0.7, 10, 1.0), 1: Run(0.7, 0.8, 0.9, 10, 3.0)},
        "b": {0: Run(0.2, 1.0, 1.0, 1000, 2.0), 1: Run(0.2, 1.0, 1.0, 1000, 2.0)},
    }
    table = runs_table(runs).splitlines()
    assert len(table) == 3 and table[0].startswith("method")
    assert "0.600 ± 0.141 (2 seeds)" in table[1] and table[1].rstrip().endswith("2.0")
    assert "1,000" in table[2]
    with pytest.raises(ValueError, match="at least 2 seeds"):
        runs_table({"a": {0: runs["a"][0]}})


def test_plot_seed_accuracies_draws_one_row_per_method():
    from utils.plotting import plot_seed_accuracies

    fig = plot_seed_accuracies({"a": {0: 0.5, 1: 0.6}, "b": {0: 0.2, 1: 0.3}}, chance=0.25)
    ax = fig.axes[0]
    assert [label.get_text() for label in ax.get_yticklabels()] == ["a", "b"]
    with pytest.raises(ValueError, match="at least one method"):
        plot_seed_accuracies({})

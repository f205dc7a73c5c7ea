"""utils.receptive_field: the computed fields, checked by hand and against gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from utils.receptive_field import (
    conv_output_size,
    footprint_box,
    gradient_footprint,
    layer_costs,
    receptive_fields,
)

layers = keras.layers


def sequential(input_shape, *stack):
    return keras.Sequential([keras.Input(input_shape), *stack])


def test_stacked_3x3_convolutions_grow_by_two():
    model = sequential((16, 16, 1), *(layers.Conv2D(2, 3, padding="same") for _ in range(3)))
    fields = receptive_fields(model)
    assert [f.size for f in fields] == [(1, 1), (3, 3), (5, 5), (7, 7)]
    assert all(f.jump == (1, 1) and f.start == (0.0, 0.0) for f in fields)
    assert fields[-1].output_size == (16, 16)


def test_valid_padding_moves_the_first_centre():
    model = sequential((16, 16, 1), layers.Conv2D(2, 3), layers.Conv2D(2, 3))
    fields = receptive_fields(model)
    assert [f.start for f in fields] == [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]
    assert fields[-1].output_size == (12, 12)
    np.testing.assert_array_equal(fields[-1].box(0, 0), [0, 0, 5, 5])


def test_notebook_02_cnn():
    model = sequential(
        (32, 32, 3),
        layers.Rescaling(1 / 255),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(5),
    )
    fields = receptive_fields(model)
    assert len(fields) == 8  # input + 7 spatial layers; Flatten stops the walk
    assert [f.size[0] for f in fields] == [1, 1, 3, 4, 8, 10, 18, 22]
    assert [f.jump[0] for f in fields] == [1, 1, 1, 2, 2, 4, 4, 8]
    assert fields[-1].output_size == (4, 4)
    np.testing.assert_array_equal(fields[2].box(0, 0), [-1, -1, 2, 2])
    np.testing.assert_array_equal(fields[2].box(0, 0, clip_to=(32, 32)), [0, 0, 2, 2])


def test_dilation_stride_and_rectangles():
    model = sequential(
        (20, 24, 1),
        layers.Conv2D(2, (3, 5), dilation_rate=2, padding="same"),
        layers.Conv2D(2, 3, strides=2, padding="same"),
    )
    first, second = receptive_fields(model)[1:]
    assert first.size == (5, 9)
    assert second.size == (7, 11) and second.jump == (2, 2)
    assert second.output_size == (10, 12)


def linear_model():
    return sequential(
        (23, 21, 2),
        layers.ZeroPadding2D(((1, 0), (2, 1))),
        layers.Conv2D(3, 3, kernel_initializer="random_normal"),
        layers.AveragePooling2D(3, strides=2, padding="same"),
        layers.Conv2D(3, 3, dilation_rate=2, padding="same", kernel_initializer="random_normal"),
        layers.DepthwiseConv2D(3, strides=2, padding="same", depthwise_initializer="random_normal"),
        layers.MaxPooling2D(2),
        layers.Conv2D(3, 2, kernel_initializer="random_normal"),
    )


@pytest.mark.parametrize("layer_index", [2, 4, 5, 6, 7])
def test_computed_fields_match_gradients(layer_index):
    keras.utils.set_random_seed(0)
    model = linear_model()
    field = receptive_fields(model)[layer_index]
    images = np.random.default_rng(0).normal(size=(8, 23, 21, 2))
    height, width = field.output_size
    for row, col in {(0, 0), (height // 2, width // 2), (height - 1, width - 1)}:
        footprint = gradient_footprint(model, images, field.layer_name, row, col)
        np.testing.assert_array_equal(
            footprint_box(footprint), field.box(row, col, clip_to=(23, 21)), err_msg=str((row, col))
        )


def test_bad_models_and_layers():
    functional_input = keras.Input((8, 8, 1))
    functional = keras.Model(functional_input, layers.Conv2D(1, 3)(functional_input))
    with pytest.raises(ValueError, match="expected a keras.Sequential"):
        receptive_fields(functional)
    with pytest.raises(ValueError, match="expected a fixed"):
        receptive_fields(sequential((None, None, 1), layers.Conv2D(1, 3)))
    with pytest.raises(ValueError, match="'upsample'.*UpSampling2D"):
        receptive_fields(sequential((8, 8, 1), layers.UpSampling2D(name="upsample")))


def test_bad_positions_and_footprints():
    model = sequential((8, 8, 1), layers.Conv2D(1, 3, name="conv"), layers.Flatten(name="flat"))
    field = receptive_fields(model)[1]
    with pytest.raises(ValueError, match="row=6: expected 0 <= row < 6"):
        field.box(6, 0)
    images = np.zeros((1, 8, 8, 1))
    with pytest.raises(ValueError, match="expected a position inside the 6x6 map"):
        gradient_footprint(model, images, "conv", 0, 6)
    with pytest.raises(ValueError, match="layer_name='flat'"):
        gradient_footprint(model, images, "flat", 0, 0)
    with pytest.raises(ValueError, match="images has shape"):
        gradient_footprint(model, images[0], "conv", 0, 0)
    with pytest.raises(ValueError, match="all zero"):
        footprint_box(np.zeros((4, 4)))


@pytest.mark.parametrize(
    "size, kernel, stride, padding", [(28, 3, 1, 0), (32, 5, 2, 2), (224, 7, 2, 3), (9, 2, 2, 0)]
)
def test_conv_output_size_matches_keras(size, kernel, stride, padding):
    model = keras.Sequential(
        [
            keras.Input((size, size, 1)),
            keras.layers.ZeroPadding2D(padding),
            keras.layers.Conv2D(1, kernel, strides=stride),
        ]
    )
    assert model.output_shape[1] == conv_output_size(size, kernel, stride, padding)


def test_conv_output_size_validation():
    with pytest.raises(ValueError, match=r"kernel=7: expected <= size \+ 2 \* padding = 5"):
        conv_output_size(5, 7)
    with pytest.raises(ValueError, match=r"stride=0"):
        conv_output_size(5, 3, stride=0)


def test_layer_costs_count_by_hand_and_agree_with_the_profiler():
    from utils.profiling import float_operations

    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, padding="same", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, name="dense"),
        ]
    )
    costs = {cost.layer_name: cost for cost in layer_costs(model)}
    assert costs["conv"].multiply_adds == 16 * 16 * 3 * 3 * 3 * 8
    assert (
        costs["conv"].activations == 16 * 16 * 8 and costs["conv"].parameters == 3 * 3 * 3 * 8 + 8
    )
    assert costs["pool"].multiply_adds == 0 and costs["pool"].activations == 8 * 8 * 8
    assert costs["dense"].multiply_adds == 8 * 8 * 8 * 10
    total = sum(cost.multiply_adds for cost in costs.values())
    flops = float_operations(model, tf.TensorSpec((1, 16, 16, 3), tf.float32))
    assert 2 * total <= flops <= 2 * total + 2 * sum(c.activations for c in costs.values())
    with pytest.raises(ValueError, match=r"model='int'"):
        layer_costs(3)

"""utils.profiling: floating-point operation counts against the textbook formulas."""

import keras
import pytest
import tensorflow as tf

from utils.profiling import float_operations


def test_dense_layer_is_two_m_n_k():
    dense = keras.layers.Dense(4, use_bias=False)
    assert float_operations(dense, tf.TensorSpec((2, 3), tf.float32)) == 2 * 2 * 3 * 4


def test_convolution_is_two_per_multiply_add_and_grows_with_the_image():
    conv = keras.layers.Conv2D(5, 3, padding="same", use_bias=False)
    small = float_operations(conv, tf.TensorSpec((1, 8, 8, 2), tf.float32))
    assert small == 2 * 8 * 8 * 3 * 3 * 2 * 5
    large = float_operations(conv, tf.TensorSpec((3, 16, 16, 2), tf.float32))
    assert large == 3 * 4 * small


def test_a_model_adds_its_layers():
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(5, 3, padding="same", use_bias=False)(inputs)
    outputs = keras.layers.Dense(7, use_bias=False)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    expected = 2 * 8 * 8 * 3 * 3 * 2 * 5 + 2 * (8 * 8 * 5) * 7
    assert float_operations(model, tf.TensorSpec((1, 8, 8, 2), tf.float32)) == expected


def test_shapes_must_be_known():
    with pytest.raises(ValueError, match=r"input_specs\[0\].*fully known shape"):
        float_operations(keras.layers.Dense(2), tf.TensorSpec((None, 3), tf.float32))

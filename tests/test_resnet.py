"""utils.resnet: residual blocks, deep plain/residual CNNs, the small ResNet."""

import keras
import numpy as np
import pytest

from utils.resnet import (
    build_deep_cnn,
    build_small_resnet,
    conv_gradient_norms,
    residual_block,
)


def _block_model(input_shape, filters, **options):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, residual_block(inputs, filters, name="block", **options))


def test_identity_shortcut_when_the_shape_is_kept():
    model = _block_model((8, 8, 16), 16)
    names = [layer.name for layer in model.layers]
    assert "block_add" in names and "block_proj" not in names
    assert tuple(model.output.shape) == (None, 8, 8, 16)


def test_projection_shortcut_when_the_shape_changes():
    model = _block_model((8, 8, 16), 32, stride=2)
    assert model.get_layer("block_proj").kernel.shape == (1, 1, 16, 32)
    assert tuple(model.output.shape) == (None, 4, 4, 32)


def test_block_with_a_zero_residual_is_the_identity():
    """With the last BatchNorm's scale and shift at zero, F(x) = 0 and the block gives relu(x)."""
    model = _block_model((6, 6, 4), 4)
    bn = model.get_layer("block_bn2")
    bn.gamma.assign(np.zeros(4, np.float32))
    x = np.random.default_rng(0).random((2, 6, 6, 4)).astype(np.float32)
    np.testing.assert_allclose(model(x, training=False), x, atol=1e-6)


def test_plain_block_has_no_shortcut():
    model = _block_model((8, 8, 16), 32, stride=2, shortcut=False)
    names = [layer.name for layer in model.layers]
    assert "block_add" not in names and "block_proj" not in names


@pytest.mark.parametrize("depth", [8, 20])
def test_deep_cnn_counts_its_weight_layers(depth):
    plain = build_deep_cnn(depth, residual=False)
    residual = build_deep_cnn(depth, residual=True)
    weight_layers = [
        layer
        for layer in plain.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)
    ]
    assert len(weight_layers) == depth
    projections = [layer for layer in residual.layers if layer.name.endswith("_proj")]
    assert len(projections) == 2  # the two stages that change width
    assert tuple(residual.output.shape) == (None, 5)


@pytest.mark.parametrize("depth", [7, 2, "20"])
def test_deep_cnn_rejects_bad_depths(depth):
    with pytest.raises(ValueError, match="depth"):
        build_deep_cnn(depth, residual=True)


def test_conv_gradient_norms_cover_every_convolution_in_order():
    keras.utils.set_random_seed(0)
    model = build_deep_cnn(8, residual=False, input_shape=(16, 16, 3))
    images = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    norms = conv_gradient_norms(model, images, np.arange(4))
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert list(norms) == convs
    assert all(np.isfinite(v) and v > 0 for v in norms.values())


def test_small_resnet_is_fully_convolutional_with_stride_8():
    model = build_small_resnet()
    features = keras.Model(model.input, model.get_layer("features").output)
    assert tuple(features(np.zeros((1, 128, 128, 3))).shape) == (1, 16, 16, 128)
    assert tuple(model(np.zeros((2, 40, 72, 3))).shape) == (2, 5)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="stride"):
        _block_model((8, 8, 4), 4, stride=3)
    with pytest.raises(ValueError, match="filters"):
        _block_model((8, 8, 4), 0)
    with pytest.raises(ValueError, match="stage_widths"):
        build_small_resnet(stage_widths=(8, 16), stage_strides=(2,))


def test_train_depth_run_measures_loss_and_gradients():
    from utils.resnet import train_depth_run

    rng = np.random.default_rng(0)
    images = rng.random((16, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 5, 16).astype("int32")
    settings = {
        "residual": True,
        "images": images,
        "labels": labels,
        "probe": (images[:8], labels[:8]),
        "epochs": 2,
        "seed": 0,
        "widths": (4, 4, 4),
        "batch_size": 8,
    }
    run = train_depth_run(8, **settings)
    assert len(run["history"]["loss"]) == 2 and run["seconds"] > 0
    assert list(run["start"]) == list(run["end"]) and "stem" in run["start"]
    again = train_depth_run(8, **settings)
    assert again["start"] == run["start"], "the same seed gives the same initial network"
    with pytest.raises(ValueError, match="epochs"):
        train_depth_run(
            8,
            residual=False,
            images=images,
            labels=labels,
            probe=(images, labels),
            epochs=0,
            seed=0,
        )


def test_degradation_report_table_and_verdicts():
    from utils.resnet import degradation_report

    def run(loss):
        return {
            "history": {"loss": [2.0, loss], "accuracy": [0.2, 0.5]},
            "start": {"stem": 1.0},
            "end": {"stem": 2.0},
        }

    losses = {
        (8, "plain"): (1.0, 1.1),
        (8, "residual"): (1.0, 1.2),
        (20, "plain"): (1.5, 1.6),
        (20, "residual"): (0.5, 0.6),
    }
    runs = {(d, k, s): run(values[s]) for (d, k), values in losses.items() for s in (0, 1)}
    table, verdicts = degradation_report(runs, (8, 20), (0, 1))
    assert len(table.splitlines()) == 5 and "1.050 ± 0.071 (2 seeds)" in table
    assert len(verdicts) == 3
    assert verdicts[0].endswith("tied")
    assert verdicts[1].startswith("final loss, plain 20 - residual 20: +1.000")
    assert verdicts[1].endswith("plain 20 higher") and verdicts[2].endswith("plain 20 higher")
    with pytest.raises(ValueError, match="runs lacks"):
        degradation_report(runs, (8, 20, 32), (0, 1))

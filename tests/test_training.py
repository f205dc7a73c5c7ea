"""utils.training: Adam with cosine decay, the epoch line, and fit_with_adam."""

import keras
import numpy as np
import pytest

from utils import training


def test_adam_decays_to_zero_along_a_cosine():
    optimizer = training.adam(1e-2, steps=10)
    for step, expected in ((0, 1e-2), (5, 0.5e-2), (10, 0.0)):
        optimizer.iterations.assign(step)
        assert float(optimizer.learning_rate) == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert float(training.adam(1e-3).learning_rate) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="learning_rate=0"):
        training.adam(0)


def test_epoch_printer_line(capsys):
    printer = training.EpochPrinter({"class": "class_loss", "box": "missing"}, ("acc", "accuracy"))
    printer.on_epoch_end(2, {"loss": 0.41234, "class_loss": 0.3, "accuracy": 0.9})
    assert capsys.readouterr().out == "  epoch 3: loss 0.412 (class 0.300, box nan), acc 0.900\n"
    training.EpochPrinter().on_epoch_end(0, {"loss": 1.0})
    assert capsys.readouterr().out == "  epoch 1: loss 1.000\n"


def test_fit_with_adam_trains_quietly_and_returns_floats(capsys):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5], np.float32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    history = training.fit_with_adam(
        model,
        x,
        y,
        epochs=20,
        steps_per_epoch=4,
        learning_rate=0.1,
        loss="mse",
        printer=training.EpochPrinter(),
        batch_size=16,
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20 and lines[0].startswith("  epoch 1: loss ")
    assert set(history) == {"loss"} and all(isinstance(v, float) for v in history["loss"])
    assert history["loss"][-1] < 0.1 * history["loss"][0]

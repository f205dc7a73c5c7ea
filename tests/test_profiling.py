"""utils.profiling: the stage timer and timing loop; operation counts against the formulas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from utils.profiling import (
    StageTimer,
    best_time,
    float_operations,
    time_per_image,
    time_side_by_side,
)


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


def test_stage_timer_adds_up_and_refuses_unknown_stages():
    timer = StageTimer(("a", "b"))
    for _ in range(2):
        with timer("a"):
            sum(range(1000))
    assert timer.seconds["a"] > 0 and timer.seconds["b"] == 0.0
    with pytest.raises(ValueError, match="stage='c'"), timer("c"):
        pass


def test_time_per_image_averages_each_stage_and_counts_proposals(monkeypatch):
    clock = iter(range(100))
    monkeypatch.setattr("utils.profiling.time.perf_counter", lambda: float(next(clock)))

    def detect_one(index, timer):
        with timer("first"):
            pass
        with timer("second"):
            pass
        return f"detections {index}", 10 * (index + 1)

    results, timing = time_per_image(
        3,
        detect_one,
        ("first", "second"),
        description="test",
        proposal_stages=("first",),
        progress=False,
    )
    assert results == ["detections 0", "detections 1", "detections 2"]
    assert timing == {
        "first": 1.0,
        "second": 1.0,
        "total": 2.0,
        "detection": 1.0,
        "proposals_per_image": 20.0,
    }
    results, timing = time_per_image(
        0, detect_one, ("first", "second"), description="test", progress=False
    )
    assert results == [] and timing["total"] == 0.0 and timing["proposals_per_image"] == 0.0
    with pytest.raises(ValueError, match="proposal_stages has 'third'"):
        time_per_image(1, detect_one, ("first",), description="test", proposal_stages=("third",))


def test_best_time_is_the_shortest_run(monkeypatch):
    clock = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])
    monkeypatch.setattr("utils.profiling.time.perf_counter", lambda: next(clock))
    calls = []
    assert best_time(lambda x: calls.append(x) or [x], 7, repeats=3) == 1.0
    assert calls == [7, 7, 7]
    with pytest.raises(ValueError, match="repeats=0"):
        best_time(lambda: None, repeats=0)


def test_time_side_by_side_keeps_every_image_and_the_least_disturbed_pass():
    calls = []

    def fake(name, slow_first):
        def run(images):
            calls.append((name, len(images)))
            first = sum(1 for n, _ in calls if n == name) <= 2
            seconds = 2.0 if (slow_first and first) else 1.0
            timing = {"head": seconds, "total": seconds, "detection": seconds}
            return [f"{name}:{image}" for image in images], timing

        return run

    images = np.arange(5)
    results = time_side_by_side(
        {"a": fake("a", True), "b": fake("b", False)},
        images,
        chunk_size=3,
        passes=2,
        progress=False,
    )
    assert [n for n, _ in calls[:4]] == ["a", "b", "b", "a"]  # turns, chunk by chunk, rotating
    assert results["a"][0] == [f"a:{i}" for i in range(5)]
    assert results["a"][1]["total"] == pytest.approx(1.0)  # the slow first pass is dropped
    assert results["b"][1] == {"head": 1.0, "total": 1.0, "detection": 1.0}
    with pytest.raises(ValueError, match=r"passes=0: expected an integer >= 1"):
        time_side_by_side({"a": fake("a", False)}, images, passes=0)

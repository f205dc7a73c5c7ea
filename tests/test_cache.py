"""utils.cache: the one cached-training recipe (miss, hit, damaged caches, keys, atomic writes)."""

import dataclasses
import json
from types import MappingProxyType

import keras
import numpy as np
import pytest

from utils import cache


@dataclasses.dataclass(frozen=True)
class TinySettings:
    units: int = 3
    seed: int = 0


def tiny_training(counter):
    def train():
        counter.append(1)
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(TinySettings.units)])
        return cache.Trained(model, {"loss": [1.0, 0.5]}, 10, 0.25, {"note": "tiny"})

    return train


def load(path, counter, **options):
    return cache.load_or_train(
        "tiny",
        "fast",
        path,
        tiny_training(counter),
        settings=TinySettings(),
        training_data="10 examples",
        **options,
    )


def test_miss_trains_and_writes_then_hit_loads_the_same_weights(tmp_path, capsys):
    path, counter = tmp_path / "tiny-fast-key.keras", []
    model, info = load(path, counter)
    out = capsys.readouterr().out.splitlines()
    assert counter == [1] and info.source == "trained" and info.path == path
    assert out[0] == "tiny (fast mode): no cached model, training on 10 examples ..."
    assert out[1].startswith("tiny (fast mode): trained in 0 s, cached to ")
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["settings"] == {"units": 3, "seed": 0} and record["note"] == "tiny"
    assert (info.history, info.training_size, info.training_seconds) == (
        {"loss": [1.0, 0.5]},
        10,
        0.25,
    )
    loaded, again = load(path, counter)
    assert counter == [1] and again.source == "cache" and again.record == info.record
    assert "loaded from" in capsys.readouterr().out
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "damage", ["truncated model", "garbage model", "garbage json", "no json", "record lacks"]
)
def test_a_damaged_cache_says_why_in_one_line_and_retrains(tmp_path, capsys, damage):
    path, counter = tmp_path / "tiny-fast-key.keras", []
    load(path, counter, verbose=False)
    record_path = path.with_suffix(".json")
    if damage == "truncated model":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "garbage model":
        path.write_bytes(b"not a keras file")
    elif damage == "garbage json":
        record_path.write_text("{")
    elif damage == "no json":
        record_path.unlink()
    else:
        record_path.write_text(json.dumps({"history": {}}))
    _, info = load(path, counter)
    out = capsys.readouterr().out.splitlines()
    assert info.source == "trained" and counter == [1, 1] and len(out) == 2
    expected = "no cached model" if damage == "no json" else "unusable ("
    assert expected in out[0] and "Traceback" not in out[0]
    assert load(path, counter, verbose=False)[1].source == "cache"
    assert not [p for p in tmp_path.iterdir() if ".tmp." in p.name]


def test_check_can_refuse_a_cache_and_retrain_can_be_asked(tmp_path, capsys):
    path, counter = tmp_path / "tiny-fast-key.keras", []
    load(path, counter, verbose=False)

    def refuse(model, record):
        raise ValueError("not the right model")

    _, info = load(path, counter, check=refuse)
    assert info.source == "trained" and "not the right model" in capsys.readouterr().out
    _, info = load(path, counter, retrain=True)
    assert info.source == "trained" and "retraining as asked" in capsys.readouterr().out


def test_keys_change_with_every_part_and_accept_settings():
    base = {"training": TinySettings(), "data": [7, "medium"], "table": MappingProxyType({"a": 1})}
    key = cache.cache_key(base)
    assert len(key) == 12 and key == cache.cache_key(dict(base))
    assert key != cache.cache_key({**base, "training": TinySettings(units=4)})
    assert key != cache.cache_key({**base, "data": [8, "medium"]})
    path = cache.cached_model_path(cache.ROOT / "data", "tiny", "full", base)
    assert path.name == f"tiny-full-{key}.keras"
    assert cache.cached_model_path(path.parent, "tiny", "fast", base) != path
    with pytest.raises(TypeError, match="expected JSON data"):
        cache.cache_key({"what": object()})


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(model), "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        cache.save_model_and_record(model, tmp_path / "m.keras", {}, tmp_path / "m.json")
    assert list(tmp_path.iterdir()) == []


def test_relative_to_root():
    assert cache.relative_to_root(cache.ROOT / "data" / "x.keras") == "data/x.keras"
    assert cache.relative_to_root("/elsewhere/x") == "/elsewhere/x"

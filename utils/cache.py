"""Trained models cached under ``data/``: one recipe for the course backbone and every detector.

A model that takes minutes to train is trained once and cached: ``load_or_train`` loads
``<directory>/<stem>-<mode>-<key>.keras`` (``cached_model_path``) or, on a miss, trains it
and writes the model with a JSON record beside it (its training history, seconds, training
set size and settings). The key hashes everything the model depends on (settings, data,
the backbone it starts from), so changing any of it trains a new model instead of loading
a stale one; full and fast mode never share a file. Both files are written to temporary
names and renamed into place, so a parallel run never reads half a file; a cache that
cannot be read is reported in one line and trained again. Introduced in notebook 04.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from utils.course import ROOT

UNREADABLE_CACHE = (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile)
"""What reading a damaged cache raises (a truncated or foreign file, a broken record)."""


def relative_to_root(path: Path | str) -> str:
    """``path`` relative to the repository root when inside it (printed paths stay portable)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"value={value!r}: expected JSON data, a dataclass or a mapping")


def cache_key(parts: Mapping) -> str:
    """12 hexadecimal digits that change whenever anything in ``parts`` changes.

    ``parts`` maps names to JSON data, dataclasses (settings) or mappings; the key is the
    SHA-256 of their canonical JSON.
    """
    text = json.dumps(parts, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_model_path(directory: Path, stem: str, mode: str, parts: Mapping) -> Path:
    """``directory / "<stem>-<mode>-<cache_key(parts)>.keras"``."""
    return Path(directory) / f"{stem}-{mode}-{cache_key(parts)}.keras"


def save_model_and_record(model, path: Path, record: dict, record_path: Path) -> None:
    """Write a Keras model to ``path`` and ``record`` as JSON to ``record_path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary_model = path.with_name(f".{path.stem}.{token}.tmp.keras")
    temporary_record = path.with_name(f".{path.stem}.{token}.tmp.json")
    try:
        model.save(temporary_model)
        temporary_record.write_text(
            json.dumps(record, indent=1, default=_jsonable), encoding="utf-8"
        )
        os.replace(temporary_model, path)
        os.replace(temporary_record, record_path)
    finally:
        temporary_model.unlink(missing_ok=True)
        temporary_record.unlink(missing_ok=True)


class Trained(NamedTuple):
    """What a training function hands ``load_or_train``: the ``model``, its Keras
    ``history`` (per-epoch logs), the ``size`` of its training set, the ``seconds`` the
    training itself took (data preparation left out) and ``extra`` fields for the record
    (e.g. a validation accuracy)."""

    model: object
    history: dict
    size: int
    seconds: float
    extra: Mapping = {}


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingInfo:
    """What ``load_or_train`` did and how the model was trained.

    ``source`` is ``"cache"`` or ``"trained"``; ``path`` the cache file; ``settings`` the
    recipe it was trained with; ``history`` the per-epoch training logs,
    ``training_seconds`` the time training took when it ran (also for a model loaded from
    the cache), ``training_size`` the number of training examples (images or patches);
    ``record`` the whole JSON record, extra fields included.
    """

    name: str
    mode: str
    source: str
    path: Path
    settings: object
    history: dict
    training_seconds: float
    training_size: int
    record: dict


REQUIRED = ("history", "training_seconds", "training_size")


def _read(path: Path, record_path: Path, check: Callable | None):
    import keras

    model = keras.models.load_model(path, compile=False)
    record = json.loads(record_path.read_text(encoding="utf-8"))
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise KeyError(f"the record lacks {', '.join(missing)}")
    if check is not None:
        check(model, record)
    return model, record


def _describe(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:120] if text else type(error).__name__


def load_or_train(
    name: str,
    mode: str,
    path: Path,
    train: Callable[[], Trained],
    *,
    settings,
    training_data: str,
    summary: Callable[[dict], str] | None = None,
    check: Callable | None = None,
    retrain: bool = False,
    verbose: bool = True,
) -> tuple[object, TrainingInfo]:
    """A cached model, or a new one trained and cached: ``(model, TrainingInfo)``.

    ``name`` and ``mode`` label the lines printed; ``path`` is the cache file (from
    ``cached_model_path``), its record ``path.with_suffix(".json")``. On a miss, an
    unreadable cache or ``retrain``, one line says why and that it trains on
    ``training_data``; ``train()`` runs; model and record are written atomically and a
    second line gives the time and the path. A hit prints one line. ``summary(record)``
    adds a few words to those lines (e.g. a validation accuracy); ``check(model, record)``
    may raise ``ValueError`` to refuse a cache that loads but does not fit.
    """
    record_path = path.with_suffix(".json")
    say = print if verbose else _silent
    reason = "retraining as asked" if retrain else "no cached model"
    if not retrain and path.exists() and record_path.exists():
        try:
            model, record = _read(path, record_path, check)
        except UNREADABLE_CACHE as error:
            reason = f"cache {relative_to_root(path)} unusable ({_describe(error)})"
        else:
            extra = f", {summary(record)}" if summary else ""
            say(f"{name} ({mode} mode): loaded from {relative_to_root(path)}{extra}")
            return model, _info(name, mode, "cache", path, settings, record)
    say(f"{name} ({mode} mode): {reason}, training on {training_data} ...")
    trained = train()
    record = {
        **dict(trained.extra),
        "history": trained.history,
        "training_seconds": round(float(trained.seconds), 2),
        "training_size": int(trained.size),
        "settings": settings,
    }
    save_model_and_record(trained.model, path, record, record_path)
    record = json.loads(record_path.read_text(encoding="utf-8"))
    extra = f", {summary(record)}" if summary else ""
    say(
        f"{name} ({mode} mode): trained in {trained.seconds:.0f} s{extra}, "
        f"cached to {relative_to_root(path)}"
    )
    return trained.model, _info(name, mode, "trained", path, settings, record)


def _info(name, mode, source, path, settings, record) -> TrainingInfo:
    return TrainingInfo(
        name=name,
        mode=mode,
        source=source,
        path=path,
        settings=settings,
        history=record["history"],
        training_seconds=record["training_seconds"],
        training_size=record["training_size"],
        record=record,
    )


def _silent(*args, **kwargs) -> None:
    return None

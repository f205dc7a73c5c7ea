"""Caches under ``data/``: mode names, repo-relative paths, atomic model + record writes.

The course backbone (notebook 04) and the detectors of notebooks 07-09 cache their
trained models the same way: full and fast mode in separate files, a JSON record beside
each model, both written to temporary files and renamed into place so a parallel run
never reads half a file (introduced in notebook 04).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from utils.course import ROOT, is_fast_mode


def mode_name(fast: bool | None = None) -> str:
    """``"fast"`` or ``"full"``: ``fast`` when given, else the current mode (``COURSE_FAST``)."""
    return "fast" if (is_fast_mode() if fast is None else fast) else "full"


def relative_to_root(path: Path | str) -> str:
    """``path`` relative to the repository root when inside it (printed paths stay portable)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def save_model_and_record(model, path: Path, record: dict, record_path: Path) -> None:
    """Write a Keras model to ``path`` and ``record`` as JSON to ``record_path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary_model = path.with_name(f".{path.stem}.{token}.tmp.keras")
    temporary_record = path.with_name(f".{path.stem}.{token}.tmp.json")
    try:
        model.save(temporary_model)
        temporary_record.write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(temporary_model, path)
        os.replace(temporary_record, record_path)
    finally:
        temporary_model.unlink(missing_ok=True)
        temporary_record.unlink(missing_ok=True)


def load_cached_model(
    name: str,
    mode: str,
    path: Path,
    record_path: Path,
    required: tuple[str, ...],
    *,
    verbose: bool = True,
):
    """``(model, record)`` from a cache written by :func:`save_model_and_record`, or None.

    None when either file is missing, or when they cannot be read or the record lacks a
    ``required`` key: then one line says so and the caller trains again. Prints
    ``"<name> (<mode> mode): loaded from <path>"`` on a hit.
    """
    import keras

    if not (path.exists() and record_path.exists()):
        return None
    try:
        model = keras.models.load_model(path, compile=False)
        record = json.loads(record_path.read_text(encoding="utf-8"))
        missing = [key for key in required if key not in record]
        if missing:
            raise KeyError(", ".join(missing))
    except Exception as error:  # any unreadable cache means: train again
        if verbose:
            print(
                f"{name} cache {relative_to_root(path)} unreadable ({type(error).__name__}): "
                "retraining"
            )
        return None
    if verbose:
        print(f"{name} ({mode} mode): loaded from {relative_to_root(path)}")
    return model, record


class Trained(NamedTuple):
    """What a training function hands ``load_or_train``: the ``model``, its Keras
    ``history`` (per-epoch logs), the ``size`` of its training set and the ``seconds``
    the training itself took (data preparation left out)."""

    model: object
    history: dict
    size: int
    seconds: float


def epoch_printer(terms: dict[str, str], accuracy: tuple[str, str] | None = None):
    """A Keras callback printing one short line per epoch: the loss, then ``terms``.

    ``terms`` maps a label to a log key (``{"class": "class_loss"}``), ``accuracy`` is an
    optional ``(label, key)`` printed last; a key missing from the logs prints ``nan``.
    Keras' own progress bar carries timings and ANSI codes, which would make stored
    notebook outputs differ from run to run.
    """
    import keras

    class EpochPrinter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            parts = ", ".join(
                f"{label} {logs.get(key, float('nan')):.3f}" for label, key in terms.items()
            )
            line = f"  epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.3f} ({parts})"
            if accuracy is not None:
                line += f", {accuracy[0]} {logs.get(accuracy[1], float('nan')):.3f}"
            print(line)

    return EpochPrinter()


def load_or_train(
    name: str,
    mode: str,
    path: Path,
    train: Callable[[], Trained],
    *,
    size_key: str,
    training_data: str,
    retrain: bool = False,
    verbose: bool = True,
) -> tuple[str, object, dict]:
    """A detector's cached model, or a new one trained and cached: ``(source, model, record)``.

    ``source`` is ``"cache"`` or ``"trained"``; ``record`` holds ``history``,
    ``training_seconds`` and ``record[size_key]`` (the training set's size), as written to
    the JSON file beside ``path``. On a miss, an unreadable cache or ``retrain``, one line
    says it trains on ``training_data``, ``train()`` runs, and model and record are written
    atomically (``save_model_and_record``); another line gives the time and the path.
    """
    record_path = path.with_suffix(".json")
    required = ("history", "training_seconds", size_key)
    cached = (
        None
        if retrain
        else load_cached_model(name, mode, path, record_path, required, verbose=verbose)
    )
    if cached is not None:
        return "cache", *cached
    if verbose:
        print(f"{name} ({mode} mode): no cached model, training on {training_data}")
    trained = train()
    record = {
        "history": trained.history,
        "training_seconds": trained.seconds,
        size_key: trained.size,
    }
    save_model_and_record(trained.model, path, record, record_path)
    if verbose:
        print(
            f"{name} ({mode} mode): trained in {trained.seconds:.0f} s, "
            f"cached to {relative_to_root(path)}"
        )
    return "trained", trained.model, record

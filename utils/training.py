"""How the course trains its cached models: Adam with a cosine-decaying learning rate, and
one short line per epoch.

The course backbone (notebook 04) and the detectors (notebooks 07-11) train with
``fit_with_adam``: Adam whose learning rate falls from ``learning_rate`` to 0 along a cosine
over all the steps (or stays constant), ``fit`` without Keras' progress bar (its timings and
ANSI codes would make stored notebook outputs differ from run to run) and an
``EpochPrinter`` line per epoch instead. Introduced in notebook 04.
"""

from __future__ import annotations

import math

import keras

from utils.checks import check_count, check_positive


class EpochPrinter(keras.callbacks.Callback):
    """Print one line per epoch: ``epoch 3: loss 0.412 (class 0.301, box 0.111), RoI accuracy 0.912``.

    ``terms`` maps a label to a log key (``{"class": "class_loss"}``); ``accuracy`` is an
    optional ``(label, key)`` printed last; a key missing from the logs prints ``nan``.
    Introduced in notebook 04.
    """

    def __init__(
        self, terms: dict[str, str] | None = None, accuracy: tuple[str, str] | None = None
    ):
        super().__init__()
        self.terms = dict(terms or {})
        self.accuracy = accuracy

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}

        def value(key: str) -> str:
            return f"{float(logs.get(key, math.nan)):.3f}"

        line = f"  epoch {epoch + 1}: loss {value('loss')}"
        if self.terms:
            line += " (" + ", ".join(f"{label} {value(key)}" for label, key in self.terms.items())
            line += ")"
        if self.accuracy is not None:
            line += f", {self.accuracy[0]} {value(self.accuracy[1])}"
        print(line)


def adam(learning_rate: float, steps: int | None = None) -> keras.optimizers.Adam:
    """Adam at ``learning_rate``; with ``steps``, decayed to 0 along a cosine over ``steps``."""
    check_positive("learning_rate", learning_rate)
    if steps is None:
        return keras.optimizers.Adam(learning_rate)
    check_count("steps", steps)
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps))


def history_floats(history: keras.callbacks.History | dict) -> dict[str, list[float]]:
    """A Keras history (or its ``.history`` dict) as plain floats, for JSON records; the
    learning rate Keras logs is left out."""
    logs = history.history if isinstance(history, keras.callbacks.History) else history
    return {
        key: [float(value) for value in values]
        for key, values in logs.items()
        if key != "learning_rate"
    }


def fit_with_adam(
    model: keras.Model,
    data,
    targets=None,
    *,
    epochs: int,
    steps_per_epoch: int,
    learning_rate: float,
    cosine: bool = True,
    loss=None,
    metrics=None,
    printer: EpochPrinter | None = None,
    verbose: bool = True,
    **fit_options,
) -> dict[str, list[float]]:
    """Compile ``model`` with ``adam`` (cosine-decayed over ``epochs * steps_per_epoch`` when
    ``cosine``) and ``loss`` / ``metrics`` (None for a model with its own ``compute_loss`` or
    ``train_step``), ``fit`` quietly, and return the history as floats.

    ``printer`` prints a line per epoch when ``verbose``; ``fit_options`` go to ``fit``
    (``batch_size``, ``validation_data``, ``shuffle``, ...). Models whose training step
    cannot be compiled by XLA (Faster R-CNN's samples RoIs in NumPy) are compiled with
    ``jit_compile=False`` whatever the device: pass it in ``fit_options`` as ``jit_compile``.
    """
    check_count("epochs", epochs)
    jit_compile = fit_options.pop("jit_compile", "auto")
    optimizer = adam(learning_rate, epochs * steps_per_epoch if cosine else None)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)
    callbacks = [printer] if (printer is not None and verbose) else []
    history = model.fit(data, targets, epochs=epochs, verbose=0, callbacks=callbacks, **fit_options)
    return history_floats(history)

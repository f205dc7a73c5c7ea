"""Argument checks at the boundary, with one message format: ``name=value: expected ...``.

Every public function and layer of the course checks its arguments before any work, so a
learner's mistake gives one line naming the argument, the value received and what was
expected, not a traceback from deep inside TensorFlow. This module is the only place
those checks are written; it imports nothing of the course (the model is Keras' own
``keras/src/utils/argument_validation.py``). Introduced in notebook 01.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _is_integer(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def fail(name: str, value, expected: str, *, error: type[Exception] = ValueError):
    """Raise ``error`` with the course's message: ``name=value: expected <expected>``."""
    raise error(f"{name}={value!r}: expected {expected}")


def check_count(name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` when it is an integer (NumPy's too) ``>= minimum``, else a ValueError."""
    if not _is_integer(value) or value < minimum:
        fail(name, value, f"an integer >= {minimum}")
    return int(value)


def check_number(
    name: str,
    value,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a ``float`` when it is a finite number in the interval, else a ValueError.

    The interval is ``[low, high]``; ``low_open`` / ``high_open`` leave out an end.
    """
    inside = (
        _is_number(value)
        and math.isfinite(value)
        and (low < value if low_open else low <= value)
        and (value < high if high_open else value <= high)
    )
    if not inside:
        fail(name, value, f"a finite number in {_interval(low, high, low_open, high_open)}")
    return float(value)


def check_fraction(name: str, value, *, high_open: bool = False) -> float:
    """``value`` as a ``float`` in ``[0, 1]`` (``[0, 1)`` with ``high_open``), else a ValueError."""
    return check_number(name, value, 0.0, 1.0, high_open=high_open)


def check_positive(name: str, value) -> float:
    """``value`` as a ``float`` when it is a finite number > 0, else a ValueError."""
    return check_number(name, value, 0.0, low_open=True)


def check_choice(name: str, value, choices: Sequence):
    """``value`` itself when it is one of ``choices``, else a ValueError listing them."""
    if value not in tuple(choices):
        fail(name, value, f"one of {tuple(choices)}")
    return value


def check_pair(name: str, value, minimum: int = 1) -> tuple[int, int]:
    """An integer or a pair of integers ``>= minimum`` as ``(int, int)``; one integer is used twice."""
    pair = (value, value) if _is_integer(value) else value
    try:
        pair = tuple(pair)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(_is_integer(item) and item >= minimum for item in pair):
        fail(name, value, f"an integer >= {minimum} or a pair of them")
    return int(pair[0]), int(pair[1])


def check_range(
    name: str, value, low: float, high: float, *, low_open: bool = False
) -> tuple[float, float]:
    """A pair ``(a, b)`` of numbers with ``low <= a <= b <= high`` (``low < a`` with ``low_open``)."""
    valid = (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(_is_number(item) for item in value)
        and (low < value[0] if low_open else low <= value[0])
        and value[0] <= value[1] <= high
    )
    if not valid:
        bound = "<" if low_open else "<="
        fail(name, value, f"(low, high) with {low} {bound} low <= high <= {high}")
    return float(value[0]), float(value[1])


def check_threshold_order(low_name: str, low, high_name: str, high) -> None:
    """``0 <= low <= high <= 1`` for two IoU thresholds, else one ValueError naming both."""
    if not (_is_number(low) and _is_number(high) and 0.0 <= low <= high <= 1.0):
        raise ValueError(
            f"{low_name}={low!r}, {high_name}={high!r}: expected 0 <= {low_name} <= "
            f"{high_name} <= 1"
        )


def check_same_length(name: str, value, other_name: str, other, per: str = "image") -> None:
    """``len(value) == len(other)``, else ``name has 3 entries and other 4: expected one per image``."""
    if len(value) != len(other):
        raise ValueError(
            f"{name} has {len(value)} entries and {other_name} {len(other)}: expected one per {per}"
        )


def check_rgb_image(image, name: str = "image") -> np.ndarray:
    """``image`` as a NumPy RGB uint8 ``[H, W, 3]`` array, else a ValueError with its shape and dtype."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{name} has shape {image.shape} and dtype {image.dtype}: expected RGB uint8 "
            "[H, W, 3] (pixel values 0..255)"
        )
    return image


def check_rgb_images(images, name: str = "images", size: Sequence[int] | None = None) -> np.ndarray:
    """``images`` as a NumPy uint8 ``[N, H, W, 3]`` array (of ``size`` ``(H, W)`` when given)."""
    images = np.asarray(images)
    expected = (*size, 3) if size is not None else None
    shape_ok = images.ndim == 4 and images.shape[-1] == 3
    if expected is not None:
        shape_ok = shape_ok and images.shape[1:] == tuple(expected)
    if not shape_ok or images.dtype != np.uint8:
        layout = f"[N, {', '.join(map(str, expected))}]" if expected else "[N, H, W, 3]"
        raise ValueError(
            f"{name} has shape {images.shape} and dtype {images.dtype}: expected RGB uint8 "
            f"{layout} (pixel values 0..255)"
        )
    return images


def check_boxes(boxes, name: str = "boxes") -> np.ndarray:
    """``boxes`` as float32 ``[N, 4]`` rows ``(x1, y1, x2, y2)``, else a ValueError with its shape."""
    boxes = np.asarray(boxes, np.float32)
    if boxes.ndim == 1 and boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} has shape {boxes.shape}: expected [N, 4] rows (x1, y1, x2, y2)")
    return boxes


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if high == math.inf and low != -math.inf:
        return f"({low}, inf)" if low_open else f"[{low}, inf)"
    if low == -math.inf and high != math.inf:
        return f"(-inf, {high})" if high_open else f"(-inf, {high}]"
    if low == -math.inf:
        return "(-inf, inf)"
    return f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

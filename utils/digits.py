"""Handwritten digits placed at random sizes and positions: an offline image task.

scikit-learn ships 1,797 real 8x8 handwritten digits (no download). Scaled up and
dropped at a random place on a larger canvas with noise, they become a task where a
pixel's meaning depends on where the digit landed: raw pixels suffer, hand-designed
features and CNNs cope (introduced in notebook 01).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class DigitSplit:
    """Train, test and (optional) validation images ``[N, S, S]`` float32 in [0, 1], int labels.

    ``x_val`` / ``y_val`` are ``None`` unless ``load_jittered_digits`` was asked for a
    validation split: the split for choices made during training (early stopping, a
    classifier's C), so the test set is used once, for the final table.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(str(d) for d in range(10))


def _place_digits(
    digits: np.ndarray,
    copies: int,
    canvas_size: int,
    digit_sizes: tuple[int, int],
    noise: float,
    jitter: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    count = len(digits) * copies
    canvas = np.zeros((count, canvas_size, canvas_size), np.float32)
    sizes = rng.integers(digit_sizes[0], digit_sizes[1] + 1, size=count)
    if not jitter:
        sizes[:] = digit_sizes[1]
    for index, (digit, size) in enumerate(zip(np.tile(digits, (copies, 1, 1)), sizes, strict=True)):
        scaled = cv2.resize(digit, (int(size), int(size)), interpolation=cv2.INTER_LINEAR)
        top, left = rng.integers(0, canvas_size - size + 1, size=2)
        if not jitter:
            top = left = (canvas_size - size) // 2
        canvas[index, top : top + size, left : left + size] = scaled
    canvas += rng.normal(0.0, noise, size=canvas.shape).astype(np.float32)
    return np.clip(canvas, 0.0, 1.0)


def load_jittered_digits(
    *,
    canvas_size: int = 32,
    digit_sizes: tuple[int, int] = (14, 24),
    train_copies: int = 3,
    test_copies: int = 1,
    test_fraction: float = 0.3,
    validation_fraction: float = 0.0,
    noise: float = 0.08,
    jitter: bool = True,
    seed: int = 0,
) -> DigitSplit:
    """Split scikit-learn's digits by writer sample, then place each at random sizes/positions.

    The split is made on the 1,797 source digits first (stratified by class), so no
    handwritten digit appears in both train and test. Each train digit is placed
    ``train_copies`` times, each test digit ``test_copies`` times. With
    ``validation_fraction > 0`` that fraction of the training *source* digits (stratified)
    becomes a validation split, placed ``test_copies`` times, so no handwritten digit is in
    two of the three splits. With
    ``jitter=False`` every digit is drawn at the largest size in the canvas centre
    (same split, same noise): the easy version where pixel positions mean the same.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    low, high = digit_sizes
    if not 1 <= low <= high <= canvas_size:
        raise ValueError(
            f"digit_sizes={digit_sizes}: expected 1 <= low <= high <= canvas_size ({canvas_size})"
        )
    for name, value in (("train_copies", train_copies), ("test_copies", test_copies)):
        if value < 1:
            raise ValueError(f"{name}={value}: expected at least 1 copy per digit")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: expected a fraction in (0, 1)")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction={validation_fraction}: expected a fraction in [0, 1)"
        )
    if noise < 0:
        raise ValueError(f"noise={noise}: expected a non-negative standard deviation")

    source = load_digits()
    images = (source.images / 16.0).astype(np.float32)
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, source.target, test_size=test_fraction, stratify=source.target, random_state=seed
    )
    val_images = val_labels = None
    if validation_fraction > 0:
        train_images, val_images, train_labels, val_labels = train_test_split(
            train_images,
            train_labels,
            test_size=validation_fraction,
            stratify=train_labels,
            random_state=seed,
        )
    rng = np.random.default_rng(seed)
    x_train = _place_digits(
        train_images, train_copies, canvas_size, digit_sizes, noise, jitter, rng
    )
    x_test = _place_digits(test_images, test_copies, canvas_size, digit_sizes, noise, jitter, rng)
    y_train = np.tile(train_labels, train_copies).astype(np.int64)
    y_test = np.tile(test_labels, test_copies).astype(np.int64)
    order = rng.permutation(len(x_train))
    if val_images is None:
        return DigitSplit(x_train[order], y_train[order], x_test, y_test)
    x_val = _place_digits(val_images, test_copies, canvas_size, digit_sizes, noise, jitter, rng)
    y_val = np.tile(val_labels, test_copies).astype(np.int64)
    return DigitSplit(x_train[order], y_train[order], x_test, y_test, x_val, y_val)

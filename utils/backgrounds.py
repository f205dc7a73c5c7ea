"""Everything in a shapes image but the shapes: real-photo backgrounds, clutter, camera effects.

Backgrounds are cut from scikit-image's sample images; clutter is random lines; the
camera adds a per-image brightness/contrast change and pixel noise. The sources are
the lossless (PNG) photographs and textures that scikit-image ships inside its wheel,
so they load offline and decode to the same bytes everywhere (its JPEG samples, such
as ``rocket``, are left out: JPEG decoders may differ in the last bit; ``coins`` too:
its coins look like the "circle" class). Every operation after decoding is integer-exact: ``cv2.pyrDown``,
``cv2.resize`` with ``INTER_LINEAR_EXACT``, flips, lookup tables, fixed-point
anti-aliased lines and integer noise (never ``rng.normal``, whose tail uses libm).
Introduced in notebook 02.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

BACKGROUND_SOURCES = (
    "brick",
    "grass",
    "gravel",
    "moon",
    "camera",
    "cell",
    "coffee",
    "astronaut",
    "chelsea",
    "immunohistochemistry",
)
MAX_ZOOM = 3.0
"""The largest crop, as a multiple of the output size: at most 3x downscaling."""

_PYRAMID_LEVELS = 3
_FLIP_CODES = (None, 0, 1, -1)  # none, vertical, horizontal, both (cv2.flip codes)
_NOISE_STD_PER_UNIT = math.sqrt(2 * (256**2 - 1) / 12)  # std of u1 + u2 - 255, u uniform bytes


@functools.cache
def load_background_sources() -> tuple[tuple[np.ndarray, ...], ...]:
    """Decode every source once per process: one pyramid of uint8 ``[H, W, 3]`` levels each.

    Level ``k`` is the source halved ``k`` times by ``cv2.pyrDown``, so a crop is never
    shrunk by more than 2x in one ``cv2.resize`` (which would alias). Grey sources are
    repeated over the three channels; the tint in ``random_background`` colours them.
    """
    import skimage.data

    pyramids = []
    for name in BACKGROUND_SOURCES:
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        levels = [np.ascontiguousarray(image[:, :, :3])]
        for _ in range(1, _PYRAMID_LEVELS):
            levels.append(cv2.pyrDown(levels[-1]))
        pyramids.append(tuple(levels))
    return tuple(pyramids)


def random_background(
    rng: np.random.Generator, height: int, width: int, contrast: tuple[float, float]
) -> np.ndarray:
    """Cut one random background: uint8 ``[height, width, 3]``.

    A random source, a crop 1x to ``MAX_ZOOM`` times the output size (smaller when the
    source is smaller) rescaled to ``height x width``, a random flip, and a per-channel
    lookup table that keeps a fraction ``contrast`` (drawn from the given range) of the
    photo's contrast and fills the rest with a random tint colour.
    """
    sources = load_background_sources()
    pyramid = sources[int(rng.integers(len(sources)))]
    source_height, source_width = pyramid[0].shape[:2]
    zoom_high = min(MAX_ZOOM, source_height / height, source_width / width)
    zoom = rng.uniform(min(1.0, zoom_high), zoom_high)
    level = 0
    while level + 1 < len(pyramid) and zoom >= 2 ** (level + 1):
        level += 1
    source = pyramid[level]
    crop_height = min(source.shape[0], max(1, int(zoom * height / 2**level)))
    crop_width = min(source.shape[1], max(1, int(zoom * width / 2**level)))
    top = int(rng.integers(source.shape[0] - crop_height + 1))
    left = int(rng.integers(source.shape[1] - crop_width + 1))
    crop = source[top : top + crop_height, left : left + crop_width]
    background = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR_EXACT)
    flip = _FLIP_CODES[int(rng.integers(len(_FLIP_CODES)))]
    if flip is not None:
        background = cv2.flip(background, flip)
    kept = int(rng.uniform(*contrast) * 256)
    tint = rng.integers(0, 256, size=3)
    values = np.arange(256)[:, None]
    table = (values * kept + tint * (256 - kept) + 128) >> 8
    return cv2.LUT(background, table.astype(np.uint8).reshape(256, 1, 3))


def draw_distractors(rng: np.random.Generator, image: np.ndarray, count: tuple[int, int]) -> None:
    """Draw ``count`` (a range) random anti-aliased lines on ``image`` in place: clutter."""
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        ends = [int(value) for value in rng.integers(0, [width, height, width, height])]
        color = tuple(int(value) for value in rng.integers(0, 256, size=3))
        thickness = int(rng.integers(1, 3))
        cv2.line(image, ends[:2], ends[2:], color, thickness, cv2.LINE_AA)


def jitter_brightness_contrast(
    rng: np.random.Generator, image: np.ndarray, brightness: float, contrast: tuple[float, float]
) -> None:
    """Scale ``image`` around grey 128 by a factor in ``contrast`` and shift it by up to
    ``brightness`` grey levels, in place, through one lookup table."""
    factor = rng.uniform(*contrast)
    shift = rng.uniform(-brightness, brightness)
    values = np.floor((np.arange(256) - 128) * factor + (128 + shift) + 0.5)
    cv2.LUT(image, np.clip(values, 0, 255).astype(np.uint8), dst=image)


def random_noise(rng: np.random.Generator, noise_bytes: np.ndarray, max_std: float) -> int:
    """Fill one image's uint8 ``noise_bytes`` ``[2, H, W, 3]`` and return its noise scale.

    The std is drawn uniformly from ``[0, max_std]``; ``add_noise`` turns the bytes and
    the scale into triangular noise of that std.
    """
    std = rng.uniform(0.0, max_std)
    noise_bytes[...] = np.frombuffer(rng.bytes(noise_bytes.size), dtype=np.uint8).reshape(
        noise_bytes.shape
    )
    return int(std * 256 / _NOISE_STD_PER_UNIT + 0.5)


def add_noise(images: np.ndarray, noise_bytes: np.ndarray, noise_scales: np.ndarray) -> None:
    """Add ``(u1 + u2 - 255) * scale / 256`` to a uint8 batch ``[N, H, W, 3]`` in place.

    ``noise_bytes`` uint8 ``[N, 2, H, W, 3]`` and ``noise_scales`` int ``[N]`` come from
    ``random_noise``; the arithmetic is int16 over the whole batch (scales up to 128).
    """
    noise = noise_bytes[:, 0].astype(np.int16) + noise_bytes[:, 1] - 255
    noise *= np.asarray(noise_scales, dtype=np.int16)[:, None, None, None]
    noise >>= 8
    noise += images
    np.clip(noise, 0, 255, out=noise)
    images[...] = noise

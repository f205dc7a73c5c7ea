"""The "shapes" dataset family: seeded coloured shapes on real-photo backgrounds.

One generator carries the course from classification (one object and its label,
introduced in notebook 03) to localization (one object, its label and its box,
notebook 06) and detection (0..N objects, their labels and boxes, notebook 07).

Conventions:
- images are uint8 ``[N, H, W, 3]`` (RGB); labels are int32 indices into
  ``class_names``;
- boxes are float32 ``[x1, y1, x2, y2]`` in continuous pixel coordinates
  (``utils.boxes``): pixel column ``c`` spans ``[c, c + 1)``, so a box tight around
  columns ``c_min..c_max`` has ``x1 = c_min`` and ``x2 = c_max + 1``;
- an object's pixels are those its anti-aliased coverage fills at least half;
  later objects are painted over earlier ones, each box is tight around the object's
  *visible* pixels, and in detection an object is labelled only when at least
  ``MIN_VISIBLE_FRACTION`` of its pixels and ``MIN_VISIBLE_PIXELS`` pixels stay
  visible (the others are still painted: occluded clutter, as in real photos);
- determinism: image ``i`` depends only on the arguments, ``seed``, ``split`` and
  ``i`` (so a smaller set is a prefix of a larger one), and all pixel arithmetic is
  integer or exact IEEE arithmetic: the same arguments give byte-identical arrays on
  any machine with the same OpenCV drawing code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from types import MappingProxyType

import cv2
import numpy as np

from utils.backgrounds import (
    add_noise,
    draw_distractors,
    jitter_brightness_contrast,
    random_background,
    random_noise,
)
from utils.checks import check_count, check_number, check_pair, check_range

CLASS_NAMES = ("circle", "square", "triangle", "star", "hexagon")
VARIANTS = ("classification", "localization", "detection")
SPLITS = ("train", "validation", "test")
DEFAULT_IMAGE_SIZE = MappingProxyType({"classification": 64, "localization": 64, "detection": 128})
DEFAULT_OBJECT_COUNT = (1, 5)
"""Detection's default ``(min_objects, max_objects)`` painted per image."""
MIN_VISIBLE_FRACTION = 0.5
MIN_VISIBLE_PIXELS = 16
MIN_OBJECT_PIXELS = 10
"""The smallest object size (its longer side, in pixels) the generator accepts."""
MIN_IMAGE_SIZE = 16

_ANGLE_STEPS = 480  # divisible by 3, 4, 6, 10 and 32: every shape's vertices are table entries
_TABLE_SCALE = 2**30
_SUBPIXEL_BITS = 4  # cv2 drawing's fixed-point `shift`
_COLOR_CANDIDATES = 8
_CHUNK = 256


def _quantized_table(function) -> np.ndarray:
    """``function(2 pi k / _ANGLE_STEPS)`` rounded to 2**-30, so libm's last bit never matters."""
    steps = range(_ANGLE_STEPS)
    values = [round(function(2 * math.pi * k / _ANGLE_STEPS) * _TABLE_SCALE) for k in steps]
    return np.array(values, dtype=np.float64) / _TABLE_SCALE


_COS = _quantized_table(math.cos)
_SIN = _quantized_table(math.sin)


def _unit_shape(first_angle: int, vertices: int, radii: Sequence[float] = (1.0,)):
    """Vertices ``(x, y)`` of a shape inscribed in the unit circle, as angle-table steps."""
    steps = (first_angle + np.arange(vertices) * (_ANGLE_STEPS // vertices)) % _ANGLE_STEPS
    radius = np.resize(np.asarray(radii, dtype=np.float64), vertices)
    return radius * _COS[steps], radius * _SIN[steps]


_SHAPES = {
    "circle": _unit_shape(0, 32),
    "square": _unit_shape(60, 4),
    "triangle": _unit_shape(120, 3),
    "star": _unit_shape(120, 10, radii=(1.0, 0.45)),
    "hexagon": _unit_shape(0, 6),
}


@dataclasses.dataclass(frozen=True)
class Difficulty:
    """How hard a shapes image is; ``DIFFICULTIES`` holds the presets (notebook 03).

    Ranges are ``(low, high)``, drawn uniformly per image or per object.
    - ``object_scale``: an object's longer side over the image's shorter side, one-object
      variants; ``detection_object_scale``: the same in detection.
    - ``max_aspect``: the longer over the shorter side of an object's stretch (>= 1).
    - ``background_contrast``: fraction of the photo's contrast kept (0 flat, 1 as shot).
    - ``min_color_distance``: RGB distance wanted between an object's colour and the mean
      of what it covers (the best of a few random colours is used when none reaches it).
    - ``noise``: the largest per-image pixel-noise std, in grey levels.
    - ``brightness``: the largest per-image brightness shift, in grey levels.
    - ``contrast``: range of the per-image contrast factor around grey level 128.
    - ``distractors``: range of the number of clutter strokes (unlabelled lines).
    """

    object_scale: tuple[float, float]
    detection_object_scale: tuple[float, float]
    max_aspect: float
    background_contrast: tuple[float, float]
    min_color_distance: float
    noise: float
    brightness: float
    contrast: tuple[float, float]
    distractors: tuple[int, int]

    def __post_init__(self):
        check_range("object_scale", self.object_scale, 0.0, 1.0, low_open=True)
        check_range("detection_object_scale", self.detection_object_scale, 0.0, 1.0, low_open=True)
        check_number("max_aspect", self.max_aspect, 1.0, 4.0)
        check_range("background_contrast", self.background_contrast, 0.0, 1.0)
        check_number("min_color_distance", self.min_color_distance, 0.0, 220.0)
        check_number("noise", self.noise, 0.0, 32.0)
        check_number("brightness", self.brightness, 0.0, 128.0)
        check_range("contrast", self.contrast, 0.0, 4.0, low_open=True)
        low, high = self.distractors
        check_count("distractors[0]", low, minimum=0)
        check_count("distractors[1]", high, minimum=0)
        if high < low:
            raise ValueError(f"distractors={self.distractors}: expected low <= high")


_PRESETS = {  # field: (easy, medium, hard), side by side so the levels compare at a glance
    "object_scale": ((0.4, 0.75), (0.3, 0.75), (0.2, 0.75)),
    "detection_object_scale": ((0.2, 0.4), (0.15, 0.4), (0.1, 0.4)),
    "max_aspect": (1.25, 1.5, 2.0),
    "background_contrast": ((0.15, 0.35), (0.35, 0.7), (0.7, 1.0)),
    "min_color_distance": (150.0, 100.0, 60.0),
    "noise": (3.0, 8.0, 16.0),
    "brightness": (10.0, 25.0, 40.0),
    "contrast": ((0.9, 1.1), (0.75, 1.25), (0.6, 1.4)),
    "distractors": ((0, 0), (0, 2), (1, 4)),
}
DIFFICULTIES = MappingProxyType(
    {
        level: Difficulty(**{field: values[index] for field, values in _PRESETS.items()})
        for index, level in enumerate(("easy", "medium", "hard"))
    }
)


@dataclasses.dataclass(frozen=True, eq=False)
class PaintedObjects:
    """Every object painted on one detection image, in paint order (with ``return_masks``).

    ``labels`` int32 ``[P]``; ``masks`` bool ``[P, H, W]``, each object's own pixels as if
    nothing covered it; ``kept`` bool ``[P]``, whether the occlusion rule labelled it.
    """

    labels: np.ndarray
    masks: np.ndarray
    kept: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class ShapesData:
    """A generated shapes set (see the module docstring for the conventions).

    - ``images``: uint8 ``[N, H, W, 3]``.
    - ``labels``: int32 ``[N]`` (classification, localization) or, in detection, a list of
      N int32 ``[G_i]``.
    - ``boxes``: None (classification), float32 ``[N, 4]`` (localization) or a list of N
      float32 ``[G_i, 4]`` (detection).
    - ``masks`` (only with ``return_masks``): the visible pixels of each labelled object,
      bool ``[N, H, W]`` or a list of N bool ``[G_i, H, W]``; ``painted``: a list of N
      ``PaintedObjects`` (detection only).
    """

    images: np.ndarray
    labels: np.ndarray | list[np.ndarray]
    boxes: np.ndarray | list[np.ndarray] | None
    class_names: tuple[str, ...]
    variant: str
    masks: np.ndarray | list[np.ndarray] | None = None
    painted: list[PaintedObjects] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def ground_truths(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image ``(boxes [G, 4], labels [G])``, the ground truths that
        ``utils.metrics.mean_average_precision`` takes. Introduced in notebook 06."""
        if self.boxes is None:
            raise ValueError(
                "variant='classification' has no boxes: expected localization or detection"
            )
        if self.variant == "localization":
            return [
                (box[None, :], label[None])
                for box, label in zip(self.boxes, self.labels, strict=True)
            ]
        return list(zip(self.boxes, self.labels, strict=True))

    def padded(self, max_objects: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detection targets as arrays: boxes float32 ``[N, M, 4]`` (zeros past the count),
        labels int32 ``[N, M]`` (-1 past the count) and counts int32 ``[N]``.
        Introduced in notebook 07."""
        if self.variant != "detection":
            raise ValueError(f"padded() needs variant='detection', got variant={self.variant!r}")
        counts = np.array([len(labels) for labels in self.labels], dtype=np.int32)
        largest = int(counts.max(initial=0))
        if max_objects is None:
            max_objects = largest
        check_count("max_objects", max_objects, minimum=0)
        if max_objects < largest:
            raise ValueError(
                f"max_objects={max_objects}: expected at least {largest}, the most labelled "
                "objects in one image"
            )
        boxes = np.zeros((len(self), max_objects, 4), dtype=np.float32)
        labels = np.full((len(self), max_objects), -1, dtype=np.int32)
        for index, count in enumerate(counts):
            boxes[index, :count] = self.boxes[index]
            labels[index, :count] = self.labels[index]
        return boxes, labels, counts


def make_shapes(
    variant: str = "classification",
    num_images: int = 1000,
    *,
    image_size: int | tuple[int, int] | None = None,
    difficulty: str | Difficulty = "medium",
    classes: Sequence[str] = CLASS_NAMES,
    min_objects: int | None = None,
    max_objects: int | None = None,
    seed: int = 0,
    split: str = "train",
    return_masks: bool = False,
) -> ShapesData:
    """Generate a shapes set: ``ShapesData`` with uint8 images ``[N, H, W, 3]``.

    ``variant``: "classification" (introduced in notebook 03), "localization" (06; the
    same images as classification for the same arguments, plus boxes) or "detection"
    (07). ``image_size``: an int or ``(height, width)``; default 64 (one object) or 128
    (detection). ``difficulty``: "easy", "medium", "hard" or a ``Difficulty``.
    ``classes``: the class names used (labels index into them). ``min_objects`` and
    ``max_objects`` (detection only, default ``DEFAULT_OBJECT_COUNT``) bound the objects
    painted on an image; occlusion can leave fewer labelled, but never none when one was
    painted. One-object classes are balanced by construction: every block of
    ``len(classes)`` consecutive images holds each class once. ``split`` picks one of
    the independent image streams of ``seed`` ("train", "validation", "test").
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: expected one of {VARIANTS}")
    check_count("num_images", num_images, minimum=0)
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTIES:
            raise ValueError(
                f"difficulty={difficulty!r}: expected one of {tuple(DIFFICULTIES)} or a Difficulty"
            )
        difficulty = DIFFICULTIES[difficulty]
    elif not isinstance(difficulty, Difficulty):
        raise ValueError(
            f"difficulty={difficulty!r}: expected one of {tuple(DIFFICULTIES)} or a Difficulty"
        )
    height, width = _image_size(DEFAULT_IMAGE_SIZE[variant] if image_size is None else image_size)
    class_names = _class_names(classes)
    detection = variant == "detection"
    if detection:
        min_objects = DEFAULT_OBJECT_COUNT[0] if min_objects is None else min_objects
        max_objects = DEFAULT_OBJECT_COUNT[1] if max_objects is None else max_objects
        check_count("min_objects", min_objects, minimum=0)
        check_count("max_objects", max_objects, minimum=0)
        if max_objects < min_objects:
            raise ValueError(
                f"max_objects={max_objects}: expected at least min_objects={min_objects}"
            )
        scale = difficulty.detection_object_scale
    else:
        for name, value in (("min_objects", min_objects), ("max_objects", max_objects)):
            if value is not None:
                raise ValueError(f"{name}={value}: applies to variant='detection' only")
        scale = difficulty.object_scale
    smallest = scale[0] * min(height, width)
    if smallest < MIN_OBJECT_PIXELS:
        raise ValueError(
            f"image_size={(height, width)} with object scale {scale}: the smallest objects "
            f"would be {smallest:.1f} px, expected >= {MIN_OBJECT_PIXELS} px (use a larger "
            "image_size or a Difficulty with a larger object scale)"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected a non-negative integer")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")

    stream = SPLITS.index(split)
    images = np.empty((num_images, height, width, 3), dtype=np.uint8)
    if detection:
        label_schedule = None
    else:
        label_schedule = _balanced_labels(int(seed), stream, num_images, len(class_names))
    scenes = []
    for start in range(0, num_images, _CHUNK):
        stop = min(num_images, start + _CHUNK)
        noise_bytes = np.empty((stop - start, 2, height, width, 3), dtype=np.uint8)
        noise_scale = np.empty(stop - start, dtype=np.int16)
        for index in range(start, stop):
            rng = np.random.Generator(
                np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(stream, 0, index)))
            )
            if detection:
                count = int(rng.integers(min_objects, max_objects + 1))
                labels = rng.integers(len(class_names), size=count)
            else:
                labels = label_schedule[index : index + 1]
            scene = _render_scene(
                rng, images[index], labels, class_names, scale, difficulty, detection, return_masks
            )
            scenes.append(scene)
            noise_scale[index - start] = random_noise(
                rng, noise_bytes[index - start], difficulty.noise
            )
        add_noise(images[start:stop], noise_bytes, noise_scale)
    return _assemble(variant, images, scenes, class_names, label_schedule, return_masks)


def make_shapes_split(
    variant: str = "classification",
    num_train: int = 1000,
    num_validation: int = 200,
    **options,
) -> tuple[ShapesData, ShapesData]:
    """A training and a validation set that share no image: ``(train, validation)``.

    Both come from ``make_shapes(variant, ..., **options)`` with ``split="train"`` and
    ``split="validation"``: independent streams of the same seed, so the validation set
    stays the same whatever ``num_train`` is. Introduced in notebook 03.
    """
    if "split" in options:
        raise ValueError(f"split={options['split']!r}: make_shapes_split sets split itself")
    train = make_shapes(variant, num_train, split="train", **options)
    validation = make_shapes(variant, num_validation, split="validation", **options)
    return train, validation


def to_tf_dataset(
    data: ShapesData,
    *,
    batch_size: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    max_objects: int | None = None,
):
    """A ``tf.data.Dataset`` of ``(image, target)`` pairs from a ``ShapesData``.

    Images stay uint8 ``[H, W, 3]`` (rescale inside the model). Targets: classification,
    the int32 label; localization, ``{"label": int32 [], "box": float32 [4]}``; detection,
    ``{"boxes": float32 [M, 4], "labels": int32 [M], "count": int32 []}`` padded to ``M =
    max_objects`` (see ``ShapesData.padded``). ``shuffle`` reshuffles every epoch, seeded.
    Batched when ``batch_size`` is given. Introduced in notebook 03.
    """
    import tensorflow as tf

    if batch_size is not None:
        check_count("batch_size", batch_size, minimum=1)
    if data.variant == "classification":
        targets = data.labels
    elif data.variant == "localization":
        targets = {"label": data.labels, "box": data.boxes}
    else:
        boxes, labels, counts = data.padded(max_objects)
        targets = {"boxes": boxes, "labels": labels, "count": counts}
    dataset = tf.data.Dataset.from_tensor_slices((data.images, targets))
    if shuffle:
        dataset = dataset.shuffle(max(1, len(data)), seed=seed, reshuffle_each_iteration=True)
    if batch_size is not None:
        dataset = dataset.batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class _Scene:
    """One rendered image's labelled objects (and, on request, its masks)."""

    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None
    painted: PaintedObjects | None


def _render_scene(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    scale: tuple[float, float],
    difficulty: Difficulty,
    drop_occluded: bool,
    return_masks: bool,
) -> _Scene:
    """Paint background, clutter and objects into ``image`` (in place) and label what shows."""
    height, width = image.shape[:2]
    image[...] = random_background(rng, height, width, difficulty.background_contrast)
    draw_distractors(rng, image, difficulty.distractors)
    owner = np.full((height, width), -1, dtype=np.int16)
    regions, areas = [], []
    for index, label in enumerate(labels):
        top, left, coverage = _rasterize(rng, class_names[label], height, width, scale, difficulty)
        pixels = coverage >= 128
        rows, columns = slice(top, top + coverage.shape[0]), slice(left, left + coverage.shape[1])
        color = _contrasting_color(rng, image[rows, columns], pixels, difficulty.min_color_distance)
        _paint(image[rows, columns], coverage, color)
        owner[rows, columns][pixels] = index
        regions.append((top, left, pixels))
        areas.append(int(pixels.sum()))
    jitter_brightness_contrast(rng, image, difficulty.brightness, difficulty.contrast)

    boxes, kept, visible_masks = [], [], []
    for index, (top, left, pixels) in enumerate(regions):
        rows, columns = slice(top, top + pixels.shape[0]), slice(left, left + pixels.shape[1])
        visible = owner[rows, columns] == index
        visible_area = int(visible.sum())
        keep = not drop_occluded or (
            visible_area >= MIN_VISIBLE_FRACTION * areas[index]
            and visible_area >= MIN_VISIBLE_PIXELS
        )
        kept.append(keep)
        if not keep:
            continue
        filled_rows = np.flatnonzero(visible.any(axis=1))
        filled_columns = np.flatnonzero(visible.any(axis=0))
        boxes.append(
            (
                left + filled_columns[0],
                top + filled_rows[0],
                left + filled_columns[-1] + 1,
                top + filled_rows[-1] + 1,
            )
        )
        if return_masks:
            visible_masks.append(_full_mask(visible, top, left, height, width))
    kept = np.array(kept, dtype=bool)
    scene = _Scene(
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int32)[kept],
        masks=None,
        painted=None,
    )
    if return_masks:
        scene.masks = np.array(visible_masks, dtype=bool).reshape(-1, height, width)
        own_masks = [_full_mask(pixels, top, left, height, width) for top, left, pixels in regions]
        scene.painted = PaintedObjects(
            labels=np.asarray(labels, dtype=np.int32),
            masks=np.array(own_masks, dtype=bool).reshape(-1, height, width),
            kept=kept,
        )
    return scene


def _rasterize(rng, shape, height, width, scale, difficulty) -> tuple[int, int, np.ndarray]:
    """Draw one random object's anti-aliased coverage: ``(top, left, uint8 [h, w])``.

    The object (its longer side ``scale`` times the image's shorter side, stretched
    by up to ``max_aspect``, rotated in 0.75-degree steps) lies inside a circle that lies
    inside the image. Geometry uses only + - * / on exact table values.
    """
    radius = rng.uniform(*scale) * min(height, width) / 2
    stretch = 1.0 / rng.uniform(1.0, difficulty.max_aspect)
    stretch_x, stretch_y = (stretch, 1.0) if rng.integers(2) else (1.0, stretch)
    turn = int(rng.integers(_ANGLE_STEPS))
    center_x = rng.uniform(radius, width - radius)
    center_y = rng.uniform(radius, height - radius)
    unit_x, unit_y = _SHAPES[shape]
    object_x = unit_x * (stretch_x * radius)
    object_y = unit_y * (stretch_y * radius)
    cos, sin = _COS[turn], _SIN[turn]
    x = center_x + (object_x * cos - object_y * sin)
    y = center_y + (object_x * sin + object_y * cos)
    # cv2 puts pixel centres on integers; ours are at c + 0.5.
    fixed = np.floor(np.stack([x, y], axis=1) * 2**_SUBPIXEL_BITS - 2 ** (_SUBPIXEL_BITS - 1) + 0.5)
    fixed = fixed.astype(np.int32)
    left = max(0, int(fixed[:, 0].min() >> _SUBPIXEL_BITS) - 1)
    top = max(0, int(fixed[:, 1].min() >> _SUBPIXEL_BITS) - 1)
    right = min(width, int(fixed[:, 0].max() >> _SUBPIXEL_BITS) + 3)
    bottom = min(height, int(fixed[:, 1].max() >> _SUBPIXEL_BITS) + 3)
    coverage = np.zeros((bottom - top, right - left), dtype=np.uint8)
    offset = np.array([left, top], dtype=np.int32) << _SUBPIXEL_BITS
    cv2.fillPoly(coverage, [fixed - offset], 255, cv2.LINE_AA, _SUBPIXEL_BITS)
    return top, left, coverage


def _contrasting_color(rng, region, pixels, min_distance) -> np.ndarray:
    """The first of a few random colours at least ``min_distance`` from the covered mean.

    Integer arithmetic: distances are compared as ``count * colour - sum``.
    """
    candidates = rng.integers(0, 256, size=(_COLOR_CANDIDATES, 3))
    count = int(pixels.sum())
    if count == 0:
        return candidates[0]
    sums = region[pixels].sum(axis=0, dtype=np.int64)
    offsets = candidates * count - sums
    distances = (offsets * offsets).sum(axis=1)
    good = distances >= int(min_distance * min_distance) * count * count
    return candidates[int(np.argmax(good)) if good.any() else int(np.argmax(distances))]


def _paint(region: np.ndarray, coverage: np.ndarray, color: np.ndarray) -> None:
    """Blend ``color`` into ``region`` in place, weighted by ``coverage / 255``, rounding."""
    alpha = coverage[:, :, None].astype(np.uint16)
    blended = (region * (255 - alpha) + color.astype(np.uint16) * alpha + 127) // 255
    region[...] = blended


def _full_mask(pixels: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
    return mask


def _balanced_labels(seed: int, stream: int, num_images: int, class_count: int) -> np.ndarray:
    """One random permutation of the classes per block of ``class_count`` images."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream, 1))))
    blocks = math.ceil(num_images / class_count)
    order = np.argsort(rng.random((blocks, class_count)), axis=1, kind="stable")
    return order.reshape(-1)[:num_images].astype(np.int32)


def _assemble(variant, images, scenes, class_names, label_schedule, return_masks) -> ShapesData:
    height, width = images.shape[1:3]
    if variant == "detection":
        return ShapesData(
            images=images,
            labels=[scene.labels for scene in scenes],
            boxes=[scene.boxes for scene in scenes],
            class_names=class_names,
            variant=variant,
            masks=[scene.masks for scene in scenes] if return_masks else None,
            painted=[scene.painted for scene in scenes] if return_masks else None,
        )
    boxes = np.array([scene.boxes[0] for scene in scenes], dtype=np.float32).reshape(-1, 4)
    masks = None
    if return_masks:
        masks = np.array([scene.masks[0] for scene in scenes], dtype=bool)
        masks = masks.reshape(-1, height, width)
    return ShapesData(
        images=images,
        labels=label_schedule,
        boxes=boxes if variant == "localization" else None,
        class_names=class_names,
        variant=variant,
        masks=masks,
    )


def _image_size(image_size) -> tuple[int, int]:
    return check_pair("image_size", image_size, minimum=MIN_IMAGE_SIZE)


def _class_names(classes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ValueError(f"classes={classes!r}: expected a sequence of names from {CLASS_NAMES}")
    names = tuple(classes)
    if not names:
        raise ValueError(f"classes={classes!r}: expected at least one class from {CLASS_NAMES}")
    unknown = [name for name in names if name not in CLASS_NAMES]
    if unknown:
        raise ValueError(
            f"classes={classes!r}: unknown {unknown}, expected names from {CLASS_NAMES}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"classes={classes!r}: expected each name at most once")
    return names

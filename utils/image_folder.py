"""Write images into the one-folder-per-class layout that Keras' directory loaders read.

``directory/<class name>/<index>.png``: the layout of ``ImageDataGenerator.flow_from_directory``
and ``keras.utils.image_dataset_from_directory``, where the folder name is the label
(introduced in notebook 03).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np


def write_image_folder(
    images: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    directory: Path | str,
) -> dict[str, int]:
    """Save uint8 images ``[N, H, W, 3]`` (RGB) or ``[N, H, W]`` as ``directory/<class>/<i>.png``.

    ``labels`` index into ``class_names``; image ``i`` is saved as ``<i:05d>.png``. PNG
    files already in the class folders are removed first, so the folders hold exactly
    these images (other files and folders are left alone). Every class gets a folder,
    even an empty one. Returns the number of images per class, in ``class_names`` order.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if (
        images.dtype != np.uint8
        or images.ndim not in (3, 4)
        or (images.ndim == 4 and images.shape[-1] != 3)
    ):
        raise ValueError(
            f"images has shape {images.shape} and dtype {images.dtype}: "
            "expected uint8 [N, H, W, 3] or [N, H, W]"
        )
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels has shape {labels.shape} and dtype {labels.dtype}: "
            f"expected {len(images)} integers, one per image"
        )
    names = list(class_names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"class_names={names!r}: expected distinct names, at least one")
    for name in names:
        if (
            not isinstance(name, str)
            or not name
            or name in (".", "..")
            or "/" in name
            or "\\" in name
        ):
            raise ValueError(f"class name {name!r}: expected a plain folder name")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(
            f"labels range from {labels.min()} to {labels.max()}: expected 0..{len(names) - 1}"
        )
    directory = Path(directory)
    for name in names:
        folder = directory / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        path = directory / names[label] / f"{index:05d}.png"
        if not cv2.imwrite(str(path), pixels):
            raise OSError(f"could not write {path}")
    counts = np.bincount(labels, minlength=len(names))
    return {name: int(count) for name, count in zip(names, counts, strict=True)}

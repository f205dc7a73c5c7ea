"""Region proposals from selective search (OpenCV contrib), a per-image cache, and recall.

R-CNN and Fast R-CNN take their candidate boxes from selective search (Uijlings et al.,
2013), computed on the *image*; Faster R-CNN replaces it with a learned RPN. Boxes are
float32 ``[x1, y1, x2, y2]`` pixels, the ``utils.boxes`` convention (introduced in
notebook 07).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from utils.boxes import iou, remove_small_boxes
from utils.checks import check_choice, check_count, check_number, check_rgb_image
from utils.course import DATA_DIR

MODES = ("fast", "quality")
PROPOSAL_CACHE_DIR = DATA_DIR / "proposals"
CONTRIB_MISSING = (
    "selective_search needs OpenCV's contrib modules (cv2.ximgproc.segmentation). In Colab, "
    "run the notebook's setup cell again (it swaps OpenCV) and restart the session if it "
    "says so; elsewhere: pip uninstall -y opencv-python opencv-python-headless "
    "opencv-contrib-python opencv-contrib-python-headless && pip install "
    "opencv-contrib-python-headless"
)


def _seed_c_random(seed: int) -> None:
    """OpenCV's selective search ranks regions with C's rand(): seed it for repeatable order."""
    for name in (None, "msvcrt"):
        try:
            library = ctypes.CDLL(name) if name is None else getattr(ctypes.cdll, name)
            library.srand(ctypes.c_uint(seed))
            return
        except (OSError, AttributeError):
            continue


def selective_search(
    image: np.ndarray,
    mode: str = "fast",
    max_proposals: int | None = 2000,
    *,
    min_size: float = 4.0,
    seed: int = 0,
) -> np.ndarray:
    """Selective search proposals for one RGB image ``[H, W, 3]`` uint8 -> float32 ``[P, 4]`` xyxy.

    Wraps ``cv2.ximgproc.segmentation.createSelectiveSearchSegmentation`` ("fast" or
    "quality" strategy), in OpenCV's ranked order (best first), with duplicates and boxes
    narrower or shorter than ``min_size`` pixels removed, cut to ``max_proposals``.
    OpenCV ranks with a random factor; ``seed`` makes the order repeatable.
    """
    try:
        import cv2

        segmentation = cv2.ximgproc.segmentation
    except (ImportError, AttributeError):
        raise ImportError(CONTRIB_MISSING) from None
    image = check_rgb_image(image)
    check_choice("mode", mode, MODES)
    if max_proposals is not None:
        check_count("max_proposals", max_proposals)
    check_number("min_size", min_size, 0.0)
    search = segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(image[..., ::-1]))  # OpenCV works in BGR
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    else:
        search.switchToSelectiveSearchQuality()
    _seed_c_random(seed)
    rects = np.asarray(search.process(), dtype=np.float32).reshape(-1, 4)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    boxes = boxes[remove_small_boxes(boxes, min_size)]
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]
    return boxes[:max_proposals] if max_proposals is not None else boxes


def _cache_path(cache_name: str, images: np.ndarray, settings: dict) -> Path:
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return PROPOSAL_CACHE_DIR / f"{cache_name}-{digest.hexdigest()[:16]}.npz"


def proposals_for_images(
    images: np.ndarray,
    *,
    cache_name: str,
    mode: str = "fast",
    max_proposals: int | None = 2000,
    min_size: float = 4.0,
    progress: bool = True,
) -> tuple[list[np.ndarray], float]:
    """Selective search for every image, cached under ``data/proposals/``.

    Returns ``(proposals, seconds_per_image)``: one float32 ``[P_i, 4]`` array per image,
    and the measured selective-search time per image (stored with the cache, so a cache
    hit still reports what computing them cost). The cache key is ``cache_name`` plus a
    hash of the image bytes and the settings, so a changed dataset never reads stale
    proposals. The file is written atomically, so parallel runs cannot corrupt it.
    """
    if not cache_name or not cache_name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"cache_name={cache_name!r}: expected letters, digits, '-' or '_'")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images has shape {images.shape}: expected [N, H, W, 3]")
    settings = {"mode": mode, "max_proposals": max_proposals, "min_size": min_size}
    path = _cache_path(cache_name, images, settings)
    if path.exists():
        try:
            with np.load(path) as stored:
                counts = stored["counts"]
                boxes = stored["boxes"]
                seconds = float(stored["seconds_per_image"])
            if len(counts) == len(images):
                return list(np.split(boxes, np.cumsum(counts)[:-1])), seconds
        except (OSError, KeyError, ValueError):
            pass  # unreadable cache: recompute below and overwrite it
    iterator = images
    if progress:
        from utils.progress import progress as progress_bar

        iterator = progress_bar(images, desc=f"selective search ({mode})", unit="image")
    start = time.perf_counter()
    proposals = [
        selective_search(image, mode, max_proposals, min_size=min_size) for image in iterator
    ]
    seconds = (time.perf_counter() - start) / max(len(images), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(
        temporary,
        boxes=np.concatenate(proposals) if proposals else np.zeros((0, 4), np.float32),
        counts=np.array([len(p) for p in proposals], np.int64),
        seconds_per_image=np.float64(seconds),
    )
    os.replace(temporary, path)
    return proposals, seconds


def proposal_recall(
    proposals: Sequence[np.ndarray],
    ground_truth_boxes: Sequence[np.ndarray],
    top_k: Sequence[int],
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """Fraction of ground-truth boxes covered (IoU >= threshold) by each image's top-k proposals.

    Returns float64 ``[len(top_k)]``, one recall per k: the curve R-CNN papers plot against
    the number of proposals.
    """
    if len(proposals) != len(ground_truth_boxes):
        raise ValueError(
            f"proposals has {len(proposals)} images and ground_truth_boxes {len(ground_truth_boxes)}: "
            "expected one entry per image in both"
        )
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold={iou_threshold}: expected a value in (0, 1]")
    top_k = [int(k) for k in top_k]
    if any(k < 1 for k in top_k):
        raise ValueError(f"top_k={top_k}: expected positive counts")
    total = sum(len(g) for g in ground_truth_boxes)
    if total == 0:
        raise ValueError("ground_truth_boxes holds no boxes: recall is undefined")
    covered = np.zeros(len(top_k))
    for boxes, truth in zip(proposals, ground_truth_boxes, strict=True):
        if len(truth) == 0 or len(boxes) == 0:
            continue
        overlaps = np.asarray(iou(np.asarray(truth, np.float32), np.asarray(boxes, np.float32)))
        # best[j, g]: best IoU of ground truth g among the first j+1 proposals.
        best = np.maximum.accumulate(overlaps.T, axis=0)
        for index, k in enumerate(top_k):
            covered[index] += np.count_nonzero(best[min(k, len(boxes)) - 1] >= iou_threshold)
    return covered / total

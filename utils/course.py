"""Notebook set-up: mode (fast/full), seeds and determinism, versions, plot defaults.

Every notebook's setup cell calls :func:`setup_notebook` once. The fast/full switch
is read here and nowhere else (introduced in notebook 01).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import utils

FAST_ENV = "COURSE_FAST"
"""Environment variable that switches fast mode on (``COURSE_FAST=1``); the tests set it."""

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (the folder holding ``utils/``, ``notebooks/`` and ``data/``)."""

DATA_DIR = ROOT / "data"
"""Where notebooks write generated data and cached models (git-ignored)."""

MINIMUM_VERSIONS = {"python": (3, 10), "tensorflow": (2, 16), "keras": (3, 0)}


def is_fast_mode() -> bool:
    """True when ``COURSE_FAST`` is set to 1/true/yes: smaller data, fewer epochs."""
    value = os.environ.get(FAST_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{FAST_ENV}={value!r}: expected 1/true/yes/on or 0/false/no/off")


MODES = ("full", "fast")
"""The two modes: ``"full"`` (what a learner runs, the stored outputs) and ``"fast"`` (the tests)."""


def resolve_mode(mode: str | None = None) -> str:
    """``mode`` itself when it is ``"full"`` or ``"fast"``; the current mode (``COURSE_FAST``)
    when it is None. Loaders resolve their ``mode`` argument once, here, and pass the name on.
    """
    if mode is None:
        return "fast" if is_fast_mode() else "full"
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected one of {MODES} or None (the current mode)")
    return mode


def pick(full, fast):
    """Return ``full`` in full mode and ``fast`` in fast mode (sizes, epochs, counts)."""
    return fast if is_fast_mode() else full


@dataclass(frozen=True)
class CourseConfig:
    """What a notebook learns from :func:`setup_notebook`."""

    fast: bool
    seed: int
    root: Path
    data_dir: Path

    @property
    def mode(self) -> str:
        return "fast" if self.fast else "full"


@contextlib.contextmanager
def quiet_tensorflow_logs():
    """Silence TensorFlow's Python-side warnings inside the block (its logger set to ERROR).

    For warnings about something done on purpose: compiling one XLA graph per RoI count
    (the retracing warning) or calling the TF1 profiler (a deprecation warning).
    """
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _version_tuple(text: str) -> tuple[int, ...]:
    numbers = []
    for part in text.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits) if digits else 0)
    return tuple(numbers)


def check_versions(versions: dict[str, str]) -> None:
    """Raise a clear RuntimeError when a package is older than the course needs."""
    problems = [
        f"{name} {versions[name]} (need >= {'.'.join(map(str, minimum))})"
        for name, minimum in MINIMUM_VERSIONS.items()
        if _version_tuple(versions[name]) < minimum
    ]
    if problems:
        raise RuntimeError(
            "This course needs newer packages: "
            + ", ".join(problems)
            + ". Run `python3 course.py test` once to create .venv, or "
            "`pip install -r requirements.txt`."
        )


def ensure_colab_packages() -> None:
    """In Colab, install what it lacks (OpenCV contrib, pycocotools), never TensorFlow/Keras.

    Colab ships TensorFlow, Keras 3, scikit-image and scikit-learn. OpenCV's contrib
    modules (selective search) must replace, not sit beside, a plain ``opencv-python``.
    """
    if "google.colab" not in sys.modules:
        return
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    try:
        import cv2

        has_contrib = hasattr(cv2, "ximgproc")
    except ImportError:
        has_contrib = False
    if not has_contrib:
        plain = ["opencv-python", "opencv-python-headless", "opencv-contrib-python"]
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", *plain], check=False)
        subprocess.run([*pip, "opencv-contrib-python-headless>=4.8,<6"], check=True)
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        subprocess.run([*pip, "pycocotools>=2.0.7"], check=True)


def set_plot_defaults() -> None:
    """Small, readable figures: stored notebook outputs stay light."""
    import matplotlib as mpl

    mpl.rcParams.update(
        {
            "figure.dpi": 72,
            "savefig.dpi": 72,
            "figure.figsize": (7.0, 4.0),
            "axes.grid": False,
            "axes.titlesize": 10,
            "axes.labelsize": 9,
            "legend.fontsize": 8,
            "xtick.labelsize": 8,
            "ytick.labelsize": 8,
            "image.cmap": "gray",
        }
    )


def setup_notebook(seed: int = 42, *, deterministic: bool = True) -> CourseConfig:
    """Prepare a notebook: Colab packages, versions, seeds, determinism, mode, plots.

    Prints one line saying the versions, the mode and the seed. With
    ``deterministic=True`` TensorFlow uses deterministic kernels, so CPU runs with
    the same thread count give bit-identical results.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected a non-negative integer")
    ensure_colab_packages()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    versions = {
        "python": ".".join(map(str, sys.version_info[:3])),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    check_versions(versions)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    set_plot_defaults()
    config = CourseConfig(fast=is_fast_mode(), seed=seed, root=ROOT, data_dir=DATA_DIR)
    config.data_dir.mkdir(exist_ok=True)
    switch = "unset COURSE_FAST for full" if config.fast else "set COURSE_FAST=1 for fast"
    print(
        f"course utils {utils.__version__} | TensorFlow {versions['tensorflow']} | "
        f"Keras {versions['keras']} | {config.mode} mode ({switch}) | seed {seed}"
    )
    return config

"""Notebook set-up: mode (fast/full), seeds and determinism, versions, plot defaults.

Every notebook's setup cell calls :func:`setup_notebook` once. The fast/full switch
is read here and nowhere else (introduced in notebook 01).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import utils
from utils.colab import ensure_colab_packages

FAST_ENV = "COURSE_FAST"
"""Environment variable that switches fast mode on (``COURSE_FAST=1``); the tests set it."""

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (the folder holding ``utils/``, ``notebooks/`` and ``data/``)."""

DATA_DIR = ROOT / "data"
"""Where notebooks write generated data and cached models (git-ignored)."""

MINIMUM_VERSIONS = {"python": (3, 11), "tensorflow": (2, 20), "keras": (3, 13)}
"""The oldest versions tested: Colab's TensorFlow and Keras (the Colab-like check), the
suite's Python (requirements.txt's floors are the same)."""


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


def mode_settings(mode: str | None, settings, table):
    """``(mode, settings)``: ``mode`` resolved (``resolve_mode``) and ``settings``, or the
    ``table``'s entry for that mode when it is None (the loaders' defaults)."""
    mode = resolve_mode(mode)
    return mode, (table[mode] if settings is None else settings)


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
    if not problems:
        return
    if "google.colab" in sys.modules:
        advice = "choose Colab's latest runtime version (Runtime > Change runtime type)"
    else:
        advice = "run `python3 course.py test` once to create .venv, and use its Python"
    raise RuntimeError(f"This course needs newer packages: {', '.join(problems)}: {advice}.")


def describe_device(gpu_names: list[str], *, deterministic: bool) -> str:
    """The setup line's device part: ``CPU`` or ``GPU <name>`` and whether ops are deterministic."""
    if not gpu_names:
        return "CPU"
    kernels = "deterministic ops, TF32 off" if deterministic else "non-deterministic ops"
    return f"GPU {', '.join(gpu_names)} ({kernels})"


def _gpu_names(tf) -> list[str]:
    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    return names


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
    """Prepare a notebook: Colab's OpenCV, versions, seeds, determinism, mode, plots.

    Prints one line saying the versions, the mode, the seed and the device. With
    ``deterministic=True`` TensorFlow uses deterministic kernels, so CPU runs with
    the same thread count give bit-identical results; on a GPU the ops the course uses
    have deterministic GPU kernels too, and TensorFloat-32 is switched off so matrix
    products keep float32 precision (numbers still differ from the stored CPU outputs).
    In Colab, :func:`utils.colab.ensure_colab_packages` runs first.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected a non-negative integer")
    ensure_colab_packages()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2
    import keras
    import tensorflow as tf

    versions = {
        "python": ".".join(map(str, sys.version_info[:3])),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    check_versions(versions)
    keras.utils.set_random_seed(seed)
    gpus = _gpu_names(tf)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
        if gpus:
            tf.config.experimental.enable_tensor_float_32_execution(False)
    set_plot_defaults()
    config = CourseConfig(fast=is_fast_mode(), seed=seed, root=ROOT, data_dir=DATA_DIR)
    config.data_dir.mkdir(exist_ok=True)
    switch = "unset COURSE_FAST for full" if config.fast else "set COURSE_FAST=1 for fast"
    print(
        f"course utils {utils.__version__} | TensorFlow {versions['tensorflow']} | "
        f"Keras {versions['keras']} | OpenCV {cv2.__version__} | {config.mode} mode ({switch}) | "
        f"seed {seed} | {describe_device(gpus, deterministic=deterministic)}"
    )
    return config

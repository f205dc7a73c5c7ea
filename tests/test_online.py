"""Online mode: notebooks 02, 04 and 05 take their download branches, top to bottom.

Offline (the rest of the suite), every ``try_download`` in the notebooks falls back.
Here the same notebooks run in fast mode with stand-in files served through Keras' own
``get_file`` (``tests/standins.py``, ``tests/online_kernel_startup.py``): the ImageNet
weights of VGG16 and ResNet50, ImageNet's class index, MNIST and CIFAR-10. A notebook
took its online branch when it ran without error, printed no "not available" line, and
asked for (and got) the downloads it documents. The notebooks run in a copy of the
repository, each with its own empty Keras cache, like a fresh Colab runtime.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from utils.course import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from colab_like import copy_checkout  # noqa: E402 - the Colab-like check's own copy of the clone

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import standins  # noqa: E402 - the stand-in builder next to this file

RESNET50 = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
EXPECTED_DOWNLOADS = {
    "02": {standins.MNIST_URL, standins.CIFAR10_URL},
    "04": {RESNET50 + NOTOP},
    "05": {
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
        "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json",
        RESNET50 + NOTOP,
    },
}
"""What each notebook's online branch downloads (its try_download calls)."""

FALLBACK_MARK = " not available ("
"""Part of try_download's line when a download failed (utils/offline.py)."""


def test_standin_urls_are_the_ones_keras_downloads():
    import keras
    from keras.src.applications import imagenet_utils

    assert standins.MNIST_URL.rsplit("/", 1)[1] in inspect.getsource(keras.datasets.mnist.load_data)
    assert standins.CIFAR10_URL in inspect.getsource(keras.datasets.cifar10.load_data)
    served = {*standins.application_weights(), imagenet_utils.CLASS_INDEX_PATH}
    served |= {standins.MNIST_URL, standins.CIFAR10_URL}
    assert set().union(*EXPECTED_DOWNLOADS.values()) <= served


def _outputs_text(notebook: dict) -> str:
    texts = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            texts.append("".join(output.get("text", "")))
            texts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


@pytest.fixture(scope="module")
def online_runs(tmp_path_factory):
    """Build the stand-ins, then run 02, 04, 05 (fast mode) in a copy of the repository."""
    from utils.runner import find_notebooks, run_notebook

    work = tmp_path_factory.mktemp("online")
    folder = work / "standins"
    build = subprocess.run(
        [sys.executable, str(HERE / "standins.py"), str(folder)], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr[-2000:]
    copy = work / "course"
    copy_checkout(copy)
    startup = work / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    shutil.copy(HERE / "online_kernel_startup.py", startup / "00-course-standins.py")
    saved = dict(os.environ)
    runs = {}
    try:
        for number in EXPECTED_DOWNLOADS:
            log = work / f"downloads-{number}.jsonl"
            log.touch()
            os.environ.update(
                IPYTHONDIR=str(work / "ipython"),
                KERAS_HOME=str(work / f"keras-{number}"),
                COURSE_STANDINS=str(folder / "manifest.json"),
                COURSE_STANDIN_LOG=str(log),
            )
            (path,) = find_notebooks([number], copy / "notebooks")
            result = run_notebook(
                path,
                fast=True,
                index=1,
                total=1,
                cell_timeout=600,
                build_dir=work / "build",
                refresh=False,
            )
            executed = json.loads((work / "build" / "executed" / path.name).read_text())
            events = [json.loads(line) for line in log.read_text().splitlines()]
            runs[number] = (result, executed, events)
            shutil.rmtree(work / f"keras-{number}", ignore_errors=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(folder, ignore_errors=True)
    return runs


@pytest.mark.parametrize("number", sorted(EXPECTED_DOWNLOADS))
def test_notebook_takes_its_online_branches(online_runs, number):
    result, executed, events = online_runs[number]
    assert result.status == "passed", f"cell {result.failed_cell}: {result.error}"
    text = _outputs_text(executed)
    fallbacks = [line for line in text.splitlines() if FALLBACK_MARK in line]
    assert fallbacks == []
    refused = {event["url"] for event in events if event["event"] != "served"}
    assert refused == set()
    served = {event["url"] for event in events}
    assert served >= EXPECTED_DOWNLOADS[number]
    assert "Downloading data from " in text

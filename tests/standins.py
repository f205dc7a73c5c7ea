"""Stand-in downloads for the online-mode test: what keras.applications and keras.datasets fetch.

    python tests/standins.py FOLDER     # writes the files and FOLDER/manifest.json

The weights files have the real files' layout (Keras' legacy HDF5 weights format) and
the real layer names and shapes, because each is saved from the same architecture built
with ``weights=None``: seeded random kernels, and the initial BatchNorm statistics, so a
forward pass stays finite. The class index has ImageNet's 1000 keys with made-up
names; MNIST has a few hundred images of the real 28x28 shape and all ten labels;
CIFAR-10 has the real counts (50,000 + 10,000, which Keras' loader requires) of
constant, well-compressing 32x32x3 images. ``manifest.json`` maps each download URL to
its file and the file's sha256; ``online_kernel_startup.py`` serves them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import sys
import tarfile
from pathlib import Path

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
"""Written in the loaders' bodies, not as Keras constants; the test checks them there."""


def application_weights():
    """URL -> (file name, builder with ``weights=None``) for the ImageNet weights served."""
    import keras
    from keras.src.applications import resnet, vgg16

    def resnet_url(include_top):
        suffix = "" if include_top else "_notop"
        return f"{resnet.BASE_WEIGHTS_PATH}resnet50_weights_tf_dim_ordering_tf_kernels{suffix}.h5"

    return {
        vgg16.WEIGHTS_PATH: lambda: keras.applications.VGG16(weights=None, include_top=True),
        vgg16.WEIGHTS_PATH_NO_TOP: lambda: keras.applications.VGG16(
            weights=None, include_top=False
        ),
        resnet_url(True): lambda: keras.applications.ResNet50(weights=None, include_top=True),
        resnet_url(False): lambda: keras.applications.ResNet50(weights=None, include_top=False),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_weights(build, path: Path) -> None:
    import gc

    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(0)
    model = build()
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)
    del model
    keras.backend.clear_session()
    gc.collect()


def _write_class_index(path: Path) -> None:
    index = {str(i): [f"n{i:08d}", f"standin_class_{i}"] for i in range(1000)}
    path.write_text(json.dumps(index), encoding="utf-8")


def _write_mnist(path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)

    def split(count):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        return images, (np.arange(count) % 10).astype(np.uint8)

    (x_train, y_train), (x_test, y_test) = split(600), split(100)
    np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _write_cifar10(path: Path) -> None:
    import numpy as np

    def batch(count, offset):
        labels = [(offset + i) % 10 for i in range(count)]
        data = np.repeat(np.array(labels, dtype=np.uint8)[:, None] * 25, 3072, axis=1)
        # Protocol 4: the arrays pickle through numpy's _reconstruct, which Keras' loader allows.
        return pickle.dumps({b"data": data, b"labels": labels}, protocol=4)

    members = {f"data_batch_{i}": batch(10_000, i) for i in range(1, 6)}
    members["test_batch"] = batch(10_000, 0)
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))


def build_standins(folder: Path) -> dict[str, dict[str, str]]:
    """Write every stand-in file and ``manifest.json`` into ``folder``; return the manifest."""
    from keras.src.applications import imagenet_utils

    folder.mkdir(parents=True, exist_ok=True)
    writers = {
        imagenet_utils.CLASS_INDEX_PATH: _write_class_index,
        MNIST_URL: _write_mnist,
        CIFAR10_URL: _write_cifar10,
    }
    for url, build in application_weights().items():
        writers[url] = lambda path, build=build: _write_weights(build, path)
    manifest = {}
    for url, write in writers.items():
        path = folder / url.rsplit("/", 1)[1]
        write(path)
        manifest[url] = {"file": path.name, "sha256": _sha256(path)}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    build_standins(Path(sys.argv[1]))

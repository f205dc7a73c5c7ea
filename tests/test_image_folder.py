"""utils.image_folder: one folder per class, lossless PNGs, stale files replaced."""

import cv2
import numpy as np
import pytest

from utils.image_folder import write_image_folder


def test_writes_one_folder_per_class_losslessly(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    counts = write_image_folder(images, [0, 2, 0, 2, 2], ["a", "b", "c"], tmp_path / "set")
    assert counts == {"a": 2, "b": 0, "c": 3}
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["a", "b", "c"]
    assert sorted(p.name for p in (tmp_path / "set" / "c").iterdir()) == [
        "00001.png",
        "00003.png",
        "00004.png",
    ]
    saved = cv2.cvtColor(cv2.imread(str(tmp_path / "set" / "c" / "00004.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(saved, images[4])


def test_rewriting_removes_old_pngs_only(tmp_path):
    images = np.zeros((3, 4, 4), np.uint8)
    write_image_folder(images, [0, 1, 1], ["x", "y"], tmp_path)
    (tmp_path / "y" / "notes.txt").write_text("kept")
    write_image_folder(images[:1], [1], ["x", "y"], tmp_path)
    assert sorted(p.name for p in (tmp_path / "y").iterdir()) == ["00000.png", "notes.txt"]
    assert list((tmp_path / "x").iterdir()) == []


def test_flow_from_directory_reads_it(tmp_path):
    import tensorflow as tf

    images = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    write_image_folder(images, [0, 1, 2, 0, 1, 2], ["circle", "square", "star"], tmp_path)
    generator = tf.keras.preprocessing.image.ImageDataGenerator()
    iterator = generator.flow_from_directory(
        tmp_path, target_size=(8, 8), batch_size=6, class_mode="sparse", shuffle=False
    )
    assert iterator.samples == 6
    assert iterator.class_indices == {"circle": 0, "square": 1, "star": 2}
    batch, labels = iterator[0]
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(batch[0], images[0])


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"images has shape \(2, 4, 4, 4\) and dtype uint8"):
        write_image_folder(np.zeros((2, 4, 4, 4), np.uint8), [0, 0], ["a"], tmp_path)
    with pytest.raises(ValueError, match=r"dtype float32"):
        write_image_folder(np.zeros((2, 4, 4), np.float32), [0, 0], ["a"], tmp_path)
    with pytest.raises(ValueError, match=r"labels has shape \(1,\)"):
        write_image_folder(np.zeros((2, 4, 4), np.uint8), [0], ["a"], tmp_path)
    with pytest.raises(ValueError, match=r"labels range from 0 to 3: expected 0..1"):
        write_image_folder(np.zeros((2, 4, 4), np.uint8), [0, 3], ["a", "b"], tmp_path)
    with pytest.raises(ValueError, match=r"class_names=\['a', 'a'\]"):
        write_image_folder(np.zeros((1, 4, 4), np.uint8), [0], ["a", "a"], tmp_path)
    with pytest.raises(ValueError, match=r"class name '../up'"):
        write_image_folder(np.zeros((1, 4, 4), np.uint8), [0], ["../up"], tmp_path)

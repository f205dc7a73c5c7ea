"""utils.course: the fast/full switch, version checks and notebook set-up."""

import re

import pytest

from utils import course


@pytest.mark.parametrize(
    "value, expected", [("1", True), ("true", True), ("0", False), ("", False), ("no", False)]
)
def test_fast_mode_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv(course.FAST_ENV, value)
    assert course.is_fast_mode() is expected
    assert course.pick(full="big", fast="small") == ("small" if expected else "big")


def test_fast_mode_unset_means_full(monkeypatch):
    monkeypatch.delenv(course.FAST_ENV, raising=False)
    assert course.is_fast_mode() is False


def test_fast_mode_rejects_unclear_values(monkeypatch):
    monkeypatch.setenv(course.FAST_ENV, "maybe")
    with pytest.raises(ValueError, match=r"COURSE_FAST='maybe': expected 1/true"):
        course.is_fast_mode()


def test_check_versions_names_what_is_too_old(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    course.check_versions({"python": "3.11.7", "tensorflow": "2.20.0", "keras": "3.13.2"})
    with pytest.raises(RuntimeError, match=r"keras 3\.12\.0 \(need >= 3\.13\): run `python3"):
        course.check_versions({"python": "3.11.7", "tensorflow": "2.21.0", "keras": "3.12.0"})
    with pytest.raises(RuntimeError, match=r"tensorflow 2\.19\.1 \(need >= 2\.20\)"):
        course.check_versions({"python": "3.13.0", "tensorflow": "2.19.1", "keras": "3.13.2"})


def test_check_versions_in_colab_never_suggests_pip(monkeypatch):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    with pytest.raises(RuntimeError, match=r"need >= 2\.20\): choose Colab's latest runtime") as e:
        course.check_versions({"python": "3.13.0", "tensorflow": "2.19.0", "keras": "3.13.2"})
    assert "pip" not in str(e.value)


def test_minimum_versions_are_the_requirement_floors():
    text = (course.ROOT / "requirements.txt").read_text()
    for name in ("tensorflow", "keras"):
        floor = re.search(rf"^{name}>=([0-9.]+)", text, re.MULTILINE).group(1)
        assert tuple(int(part) for part in floor.split(".")[:2]) == course.MINIMUM_VERSIONS[name]


@pytest.mark.parametrize(
    "names, deterministic, expected",
    [
        ([], True, "CPU"),
        (["Tesla T4"], True, "GPU Tesla T4 (deterministic ops, TF32 off)"),
        (["NVIDIA L4"], False, "GPU NVIDIA L4 (non-deterministic ops)"),
    ],
)
def test_describe_device(names, deterministic, expected):
    assert course.describe_device(names, deterministic=deterministic) == expected


def test_setup_notebook_seeds_and_reports(monkeypatch, capsys):
    import keras
    import numpy as np

    monkeypatch.setenv(course.FAST_ENV, "1")
    config = course.setup_notebook(seed=7)
    first = keras.random.uniform((3,)).numpy(), np.random.rand(3)  # noqa: NPY002 - the legacy global seed is set too
    course.setup_notebook(seed=7)
    second = keras.random.uniform((3,)).numpy(), np.random.rand(3)  # noqa: NPY002 - the legacy global seed is set too
    assert config.fast and config.mode == "fast" and config.seed == 7
    assert config.root == course.ROOT and config.data_dir.is_dir()
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    line = capsys.readouterr().out.splitlines()[-1]
    assert "fast mode" in line and "| OpenCV " in line
    assert re.search(r"\| seed 7 \| (CPU|GPU .+)$", line)


@pytest.mark.parametrize("seed", [-1, True, 1.5])
def test_setup_notebook_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match=rf"seed={seed!r}: expected a non-negative integer"):
        course.setup_notebook(seed=seed)


def test_quiet_tensorflow_logs_silences_warnings_then_restores_the_level(caplog):
    import logging

    logger = logging.getLogger("tensorflow")
    before = logger.level
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        with course.quiet_tensorflow_logs():
            logger.warning("hidden")
        logger.warning("shown")
    assert [record.getMessage() for record in caplog.records] == ["shown"]
    assert logger.level == before

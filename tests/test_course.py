"""utils.course: the fast/full switch, version checks and notebook set-up."""

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


def test_check_versions_names_what_is_too_old():
    course.check_versions({"python": "3.11.7", "tensorflow": "2.21.0", "keras": "3.15.1"})
    with pytest.raises(RuntimeError, match=r"keras 2\.15\.0 \(need >= 3\.0\)"):
        course.check_versions({"python": "3.11.7", "tensorflow": "2.21.0", "keras": "2.15.0"})
    with pytest.raises(RuntimeError, match=r"tensorflow 2\.15\.1"):
        course.check_versions({"python": "3.11.7", "tensorflow": "2.15.1", "keras": "3.0.0"})


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
    assert "fast mode" in capsys.readouterr().out


def test_setup_notebook_rejects_bad_seed():
    with pytest.raises(ValueError, match=r"seed=-1: expected a non-negative integer"):
        course.setup_notebook(seed=-1)


def test_colab_packages_untouched_outside_colab(monkeypatch):
    import subprocess
    import sys

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(
        subprocess, "run", lambda *a, **k: pytest.fail("pip must not run outside Colab")
    )
    course.ensure_colab_packages()


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

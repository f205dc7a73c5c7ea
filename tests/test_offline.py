"""utils.offline.try_download: one clear line and None when a download is not available."""

import errno
import socket
import urllib.error

import pytest

from utils.offline import download_failure_reason, try_download


def test_returns_the_loaded_value():
    assert try_download("the thing", lambda: 42, fallback="use 0") == 42


def test_failure_prints_one_line_and_returns_none(capsys):
    def offline():
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    assert try_download("MNIST", offline, fallback="using scikit-learn's digits") is None
    assert (
        capsys.readouterr().out
        == "MNIST not available (no network) -> using scikit-learn's digits\n"
    )


def keras_offline(monkeypatch, tmp_path, reason):
    """Keras' own get_file, with its cache in tmp_path and urlretrieve failing with ``reason``."""
    from keras.src.backend import config
    from keras.src.utils import file_utils

    def fail(*_):
        raise reason

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))
    monkeypatch.setattr(file_utils, "urlretrieve", fail)


@pytest.mark.parametrize(
    "reason, said",
    [
        (urllib.error.URLError(socket.gaierror(-2, "Name or service not known")), "no network"),
        (urllib.error.URLError(OSError(errno.ENETUNREACH, "Network is unreachable")), "no network"),
        (urllib.error.URLError(TimeoutError("timed out")), "timed out after 15 s"),
        (urllib.error.HTTPError("u", 404, "Not Found", {}, None), "HTTP 404 Not Found"),
    ],
)
def test_keras_dataset_offline_is_one_line(monkeypatch, tmp_path, capsys, reason, said):
    import keras

    keras_offline(monkeypatch, tmp_path, reason)
    loaded = try_download("MNIST", keras.datasets.mnist.load_data, fallback="published sizes")
    assert loaded is None
    assert capsys.readouterr().out == f"MNIST not available ({said}) -> published sizes\n"


def test_keras_application_weights_offline_is_one_line(monkeypatch, tmp_path, capsys):
    import keras

    keras_offline(monkeypatch, tmp_path, urllib.error.URLError(socket.gaierror(-3, "Temporary")))
    model = try_download(
        "ImageNet weights for VGG16",
        lambda: keras.applications.VGG16(weights="imagenet", include_top=False),
        fallback="weights=None",
    )
    assert model is None
    out = capsys.readouterr().out
    assert out == "ImageNet weights for VGG16 not available (no network) -> weights=None\n"


def test_download_notice_is_shown_once_the_download_makes_progress(capsys):
    def downloading():
        print("Downloading data from https://example.org/x.npz")
        print("  8192/100000 [==>....]", end="")
        return "data"

    assert try_download("x", downloading, fallback="-") == "data"
    assert capsys.readouterr().out.startswith(
        "Downloading data from https://example.org/x.npz\n  8192"
    )


def test_download_notice_of_a_file_that_loads_without_progress_is_kept(capsys):
    def quick():
        print("Downloading data from https://example.org/x.npz")
        return 1

    assert try_download("x", quick, fallback="-") == 1
    assert capsys.readouterr().out == "Downloading data from https://example.org/x.npz\n"


@pytest.mark.parametrize(
    "error, said",
    [
        (
            ValueError("Incomplete or corrupted file detected. The md5 file hash does not match"),
            "the downloaded file's hash does not match",
        ),
        (
            Exception(
                "URL fetch failure on https://x: None -- [Errno -2] Name or service not known"
            ),
            "no network",
        ),
        (
            RuntimeError("a b c " * 40),
            "RuntimeError: " + ("a b c " * 40)[:66].rsplit(" ", 1)[0] + " ...",
        ),
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (KeyError(), "KeyError"),
    ],
)
def test_reasons_are_short_and_never_cut_mid_word(error, said):
    reason = download_failure_reason(error)
    assert reason == said
    assert len(reason) <= 84


def test_socket_timeout_bounded_during_load_and_restored():
    before = socket.getdefaulttimeout()
    seen = try_download("x", socket.getdefaulttimeout, fallback="-", timeout=3.0)
    assert seen == 3.0
    assert socket.getdefaulttimeout() == before


def test_keyboard_interrupt_is_not_swallowed():
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        try_download("x", interrupted, fallback="-")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"load": 3}, r"load=3: expected a callable"),
        ({"timeout": 0}, r"timeout=0"),
        ({"timeout": True}, r"timeout=True"),
        ({"timeout": "5"}, r"timeout='5'"),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = {"description": "x", "load": lambda: 1, "fallback": "-", **kwargs}
    with pytest.raises(ValueError, match=message):
        try_download(arguments.pop("description"), arguments.pop("load"), **arguments)

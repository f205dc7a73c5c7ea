"""utils.offline.try_download: one clear line and None when a download is not available."""

import socket
import urllib.error

import pytest

from utils.offline import try_download


def test_returns_the_loaded_value():
    assert try_download("the thing", lambda: 42, fallback="use 0") == 42


def test_failure_prints_one_line_and_returns_none(capsys):
    def offline():
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    assert try_download("MNIST", offline, fallback="using scikit-learn's digits") is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith("MNIST not available (URLError:")
    assert out.rstrip().endswith("-> using scikit-learn's digits")


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
    [({"load": 3}, r"load=3: expected a callable"), ({"timeout": 0}, r"timeout=0")],
)
def test_bad_arguments(kwargs, message):
    arguments = {"description": "x", "load": lambda: 1, "fallback": "-", **kwargs}
    with pytest.raises(ValueError, match=message):
        try_download(arguments.pop("description"), arguments.pop("load"), **arguments)

"""Offline first: try a download, and when it cannot be had say so in one line.

The course runs with no internet. Where the real thing needs a download (ImageNet
weights, MNIST, CIFAR-10) a notebook wraps the loader in :func:`try_download` and
carries on with the offline path when it returns ``None`` (introduced in notebook 02).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
import sys
import urllib.error
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS = 15.0

HELD_NOTICES = ("Downloading data from ", "A local file was found, but")
"""Keras' own lines before a download: shown once the download shows progress, dropped
when it fails (the one line of :func:`try_download` says it all)."""

_NO_NETWORK_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}
_NO_NETWORK_TEXT = (
    "Name or service not known",
    "Temporary failure in name resolution",
    "nodename nor servname",
    "Network is unreachable",
    "No address associated with hostname",
)


class _HoldNotices:
    """A stdout that holds back Keras' download notices until more output follows."""

    def __init__(self, stream):
        self._stream = stream
        self._held = ""

    def write(self, text: str) -> int:
        if text.startswith(HELD_NOTICES):
            self._held += text
            return len(text)
        self.release()
        return self._stream.write(text)

    def release(self) -> None:
        if self._held:
            self._stream.write(self._held)
            self._held = ""

    def discard(self) -> None:
        self._held = ""

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _causes(error: BaseException):
    """The error, then what it was raised from or during (Keras re-raises URLError so)."""
    seen = []
    while error is not None and len(seen) < 10 and all(error is not e for e in seen):
        seen.append(error)
        if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
            seen.append(error.reason)
        error = error.__cause__ or error.__context__
    return seen


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def download_failure_reason(error: BaseException, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> str:
    """A few words on why a download failed: "no network", "timed out after 15 s", "HTTP 404".

    Looks through the chain of errors (``keras.utils.get_file`` wraps the ``URLError`` in
    a plain ``Exception``), so the reason is never a message cut mid-token.
    """
    for cause in _causes(error):
        if isinstance(cause, urllib.error.HTTPError):
            return _shorten(f"HTTP {cause.code} {cause.reason}")
        if isinstance(cause, socket.gaierror):
            return "no network"
        if isinstance(cause, TimeoutError):
            return f"timed out after {timeout:g} s"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ssl.SSLError):
            return "TLS error"
        if isinstance(cause, OSError) and cause.errno in _NO_NETWORK_ERRNOS:
            return "no network"
    message = str(error)
    if any(text in message for text in _NO_NETWORK_TEXT):
        return "no network"
    if "hash does not match" in message:
        return "the downloaded file's hash does not match"
    first_line = message.strip().splitlines()[0] if message.strip() else ""
    return _shorten(f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__)


def try_download(
    description: str,
    load: Callable[[], T],
    *,
    fallback: str,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> T | None:
    """Call ``load()``; on failure print one line naming what, why and what instead; None.

    ``description`` names the thing ("ImageNet weights for VGG16"), ``fallback`` says
    what the notebook does instead; the line reads ``<description> not available
    (<reason>) -> <fallback>``, the reason in a few words (:func:`download_failure_reason`).
    Keras' "Downloading data from ..." line is shown only once the download makes
    progress, so a failed download prints that one line alone. Files already in Keras'
    cache load without a network. A socket timeout bounds how long a hung connection
    can stall the notebook. Only the loader's own failure is caught and reported;
    interrupting the kernel still works.
    """
    if not callable(load):
        raise ValueError(f"load={load!r}: expected a callable that takes no arguments")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout={timeout!r}: expected a positive number of seconds")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    stdout = _HoldNotices(sys.stdout)
    try:
        with contextlib.redirect_stdout(stdout):
            value = load()
        stdout.release()
        return value
    except Exception as error:  # noqa: BLE001 - any loader failure means "not available here"
        stdout.discard()
        print(
            f"{description} not available ({download_failure_reason(error, timeout)}) -> {fallback}"
        )
        return None
    finally:
        socket.setdefaulttimeout(previous)

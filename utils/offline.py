"""Offline first: try a download, and when it cannot be had say so in one line.

The course runs with no internet. Where the real thing needs a download (ImageNet
weights, MNIST, CIFAR-10) a notebook wraps the loader in :func:`try_download` and
carries on with the offline path when it returns ``None`` (introduced in notebook 02).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS = 15.0


def try_download(
    description: str,
    load: Callable[[], T],
    *,
    fallback: str,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> T | None:
    """Call ``load()``; on failure print one line naming what and why, and return None.

    ``description`` names the thing ("ImageNet weights for VGG16"), ``fallback`` says
    what the notebook does instead. Files already in Keras' cache load without a
    network. A socket timeout bounds how long a hung connection can stall the
    notebook. Only the loader's own failure is caught and reported; interrupting
    the kernel still works.
    """
    if not callable(load):
        raise ValueError(f"load={load!r}: expected a callable that takes no arguments")
    if timeout <= 0:
        raise ValueError(f"timeout={timeout!r}: expected a positive number of seconds")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return load()
    except Exception as error:  # noqa: BLE001 - any loader failure means "not available here"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = f"{type(error).__name__}: {reason}"[:160]
        print(f"{description} not available ({reason}) -> {fallback}")
        return None
    finally:
        socket.setdefaulttimeout(previous)

"""IPython start-up file of the online-mode test: keras.utils.get_file gets stand-in files.

Copied into the kernel's ``$IPYTHONDIR/profile_default/startup/``. Before each cell,
once Keras is imported, it swaps two things inside ``keras.src.utils.file_utils`` and
nothing else: ``urlretrieve`` fetches the stand-in of each known URL from its folder
(``file://``; unknown URLs fail like a missing network), and ``validate_file`` also
accepts a stand-in's own sha256 where the real file's hash is expected. Caching,
progress bar, hash checks and archive extraction stay Keras' own. Every request is
appended to ``$COURSE_STANDIN_LOG`` as one JSON line.
"""

import errno
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from IPython import get_ipython

_MANIFEST_PATH = Path(os.environ["COURSE_STANDINS"])
_MANIFEST = json.loads(_MANIFEST_PATH.read_text(encoding="utf-8"))
_STANDIN_HASHES = {entry["sha256"] for entry in _MANIFEST.values()}
_LOG = Path(os.environ["COURSE_STANDIN_LOG"])


def _log(event, url):
    with _LOG.open("a", encoding="utf-8") as log:
        log.write(json.dumps({"event": event, "url": url}) + "\n")


def _serve(url, filename=None, reporthook=None, data=None):
    entry = _MANIFEST.get(url)
    if entry is None:
        _log("refused", url)
        raise urllib.error.URLError(OSError(errno.ENETUNREACH, "no stand-in for this URL"))
    _log("served", url)
    source = (_MANIFEST_PATH.parent / entry["file"]).as_uri()
    return urllib.request.urlretrieve(source, filename, reporthook, data)


def _patch_keras(*_):
    file_utils = sys.modules.get("keras.src.utils.file_utils")
    if file_utils is None or getattr(file_utils, "_course_standins", False):
        return
    real_validate = file_utils.validate_file

    def validate_file(fpath, file_hash, algorithm="auto", chunk_size=65535):
        if real_validate(fpath, file_hash, algorithm, chunk_size):
            return True
        return file_utils.hash_file(fpath, "sha256", chunk_size) in _STANDIN_HASHES

    file_utils.urlretrieve = _serve
    file_utils.validate_file = validate_file
    file_utils._course_standins = True


get_ipython().events.register("pre_run_cell", _patch_keras)

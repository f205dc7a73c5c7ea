"""pytest settings for the unit tests and the nbval run over notebooks/ (fast mode).

Environment variables set here are inherited by the notebook kernels that nbval
starts, so this is where fast mode and the thread pins are switched on.
"""

import os
import sys

# Fast mode: smaller data and fewer epochs, same code path (utils.course reads it).
os.environ["COURSE_FAST"] = "1"
# Bit-identical CPU results need a fixed thread count (notebooks.md).
os.environ["TF_NUM_INTRAOP_THREADS"] = "1"
os.environ["TF_NUM_INTEROP_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("MPLBACKEND", "Agg")
# Kernels started by nbval find this interpreter's packages first.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


def pytest_collectstart(collector):
    """Leave stderr and HTML reprs out of nbval's comparison of checked cells.

    Under pytest, ipykernel stops capturing C-level stderr, so TensorFlow's start-up
    lines are in the stored outputs but not in the re-run; HTML reprs carry ids.
    """
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr", "text/html")

"""Colab: where the notebooks clone the course from, their badge and setup cell, and OpenCV.

The repository URL and branch live here and nowhere else: every notebook's "Open in
Colab" badge and setup cell are generated from :data:`REPOSITORY` and :data:`BRANCH` by
``python3 course.py publish --repository URL`` (:func:`publish`), and a test checks that
the notebooks agree with them. :func:`ensure_colab_packages` is what the setup cell does
in Colab about OpenCV (introduced in notebook 01).

This module imports only the standard library, so ``course.py publish`` runs without the
course environment; for the same reason its one argument check is written here rather
than with ``utils.checks`` (same message format, ``name=value: expected ...``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

REPOSITORY = "https://github.com/keras-feature-extraction/course"
"""The GitHub repository the notebooks' badges open and their setup cell clones in Colab."""

BRANCH = "main"
"""The branch the badges open and the setup cell clones (``git clone -b BRANCH``)."""

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"

OPENCV_DISTRIBUTIONS = (
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
)
"""The four pip distributions that all install the same ``cv2`` folder over each other."""

OPENCV_PACKAGE = "opencv-contrib-python-headless"
"""The one the course installs: contrib (selective search), no GUI."""

SELECTIVE_SEARCH_PROBE = (
    "import cv2; cv2.ximgproc.segmentation.createSelectiveSearchSegmentation(); "
    "print(cv2.__version__)"
)
"""Run in a fresh interpreter: prints the cv2 version when selective search can be created."""

RESTART_ADVICE = "use Runtime > Restart session, then run this cell again"

_GITHUB = re.compile(r"https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?")
_BADGE = re.compile(
    r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
    r"\(https://colab\.research\.google\.com/github/[^)\s]*\)"
)
_CONSTANT = 'REPOSITORY = "{repository}"'


class RestartSession(RuntimeError):
    """OpenCV was replaced after this kernel imported ``cv2``: the session must restart.

    Jupyter shows only the message (one line, no traceback): IPython prints what
    ``_render_traceback_`` returns instead of the traceback.
    """

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


def github_name(repository: str) -> str:
    """``OWNER/NAME`` of a GitHub URL such as ``https://github.com/OWNER/NAME``.

    Colab opens notebooks straight from GitHub only, so other hosts are refused.
    """
    match = _GITHUB.fullmatch(repository) if isinstance(repository, str) else None
    if match is None:
        raise ValueError(
            f"repository={repository!r}: expected https://github.com/OWNER/NAME "
            "(Colab opens notebooks from GitHub)"
        )
    return f"{match.group(1)}/{match.group(2)}"


def _check_branch(branch: str) -> str:
    if not isinstance(branch, str) or not re.fullmatch(r"[A-Za-z0-9_./-]+", branch):
        raise ValueError(f"branch={branch!r}: expected a git branch name such as 'main'")
    return branch


def badge_markdown(notebook: str, repository: str = REPOSITORY, branch: str = BRANCH) -> str:
    """The "Open in Colab" badge of ``notebooks/<notebook>`` on GitHub."""
    name = github_name(repository)
    url = f"https://colab.research.google.com/github/{name}/blob/{_check_branch(branch)}"
    return (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({url}/notebooks/{notebook})"
    )


def setup_cell_source(repository: str = REPOSITORY, branch: str = BRANCH) -> str:
    """The code of every notebook's setup cell (cell 1), cloning ``repository`` in Colab.

    Outside Colab it finds ``utils/`` above the notebook; in Colab it clones the course
    next to the notebook (``course/``) unless a clone is already there. Then
    :func:`utils.course.setup_notebook` does the rest.
    """
    github_name(repository)
    _check_branch(branch)
    return f'''# Setup: find the course's utils (clone the course in Colab), then seeds, mode and plots.
import sys
from pathlib import Path

REPOSITORY, BRANCH = "{repository}", "{branch}"
if "google.colab" in sys.modules and not Path("course").exists():
    import subprocess

    clone = ["git", "clone", "-q", "--depth", "1", "--branch", BRANCH, REPOSITORY, "course"]
    subprocess.run(clone, check=True)
candidates = [Path.cwd(), *Path.cwd().parents, Path("course").resolve()]
ROOT = next((p for p in candidates if (p / "utils" / "course.py").is_file()), None)
if ROOT is None:
    raise RuntimeError("utils/ not found: open this notebook from the course's notebooks/ folder")
sys.path.insert(0, str(ROOT))

from utils.course import pick, setup_notebook

config = setup_notebook(seed=42)'''


def _source_lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def publish(
    repository: str,
    branch: str = BRANCH,
    *,
    notebook_dir: Path = NOTEBOOK_DIR,
    module: Path = Path(__file__),
) -> list[Path]:
    """Point every notebook's badge and setup cell (and this module) at ``repository``.

    Rewrites only the badge in cell 0 and the whole of cell 1 of each
    ``NN_*.ipynb``, keeping the rest of the file byte for byte (nbformat's layout:
    one-space indent, sorted keys). Returns the files that changed.
    """
    github_name(repository)
    _check_branch(branch)
    notebooks = sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise ValueError(f"notebook_dir={str(notebook_dir)!r}: expected NN_*.ipynb notebooks")
    changed = []
    for path in notebooks:
        text = path.read_text(encoding="utf-8")
        notebook = json.loads(text)
        title, setup = notebook["cells"][0], notebook["cells"][1]
        heading = "".join(title["source"])
        badges = list(_BADGE.finditer(heading))
        if title["cell_type"] != "markdown" or len(badges) != 1:
            raise ValueError(f"{path.name}: expected one Colab badge in the first (markdown) cell")
        if setup["cell_type"] != "code" or "setup_notebook(" not in "".join(setup["source"]):
            raise ValueError(f"{path.name}: expected the setup cell as the second cell")
        badge = badge_markdown(path.name, repository, branch)
        start, end = badges[0].span()
        title["source"] = _source_lines(heading[:start] + badge + heading[end:])
        setup["source"] = _source_lines(setup_cell_source(repository, branch))
        new_text = json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        if new_text != text:
            path.write_text(new_text, encoding="utf-8")
            changed.append(path)
    code = Path(module).read_text(encoding="utf-8")
    new_code = re.sub(r'(?m)^REPOSITORY = ".*"$', _CONSTANT.format(repository=repository), code)
    new_code = re.sub(r'(?m)^BRANCH = ".*"$', f'BRANCH = "{branch}"', new_code)
    if new_code != code:
        Path(module).write_text(new_code, encoding="utf-8")
        changed.append(Path(module))
    return changed


def opencv_requirement(requirements: Path = ROOT / "requirements.txt") -> str:
    """The course's OpenCV requirement as written in ``requirements.txt`` (one place)."""
    for line in Path(requirements).read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if re.match(rf"{OPENCV_PACKAGE}\s*([<>=!~]|$)", requirement):
            return requirement.replace(" ", "")
    raise ValueError(f"requirements={str(requirements)!r}: expected a {OPENCV_PACKAGE} line")


def installed_opencv() -> list[str]:
    """``name version`` of each cv2 distribution pip has installed here."""
    importlib.invalidate_caches()
    found = []
    for name in OPENCV_DISTRIBUTIONS:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def selective_search_version(python: str = sys.executable) -> tuple[str | None, str]:
    """(cv2 version, "") when a fresh ``python`` can create selective search, else (None, why).

    A subprocess, so this kernel never imports a ``cv2`` that is about to be replaced.
    Checking ``hasattr(cv2, "ximgproc")`` is not enough: when plain ``opencv-python``
    overwrites contrib, contrib's stub folder ``cv2/ximgproc/`` stays behind as an
    empty namespace package.
    """
    result = subprocess.run(
        [python, "-c", SELECTIVE_SEARCH_PROBE], capture_output=True, text=True, timeout=300
    )
    if result.returncode == 0:
        return result.stdout.strip().splitlines()[-1], ""
    lines = result.stderr.strip().splitlines()
    return None, (lines[-1] if lines else f"exit status {result.returncode}")


def _pip(*arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", *arguments, "-q", "--disable-pip-version-check"]
    return subprocess.run(command, capture_output=True, text=True)


def ensure_colab_packages() -> None:
    """In Colab, make ``cv2`` OpenCV's contrib build; never touch TensorFlow or Keras.

    Colab ships three cv2 distributions on two major versions (``opencv-python`` and
    ``-headless`` 5.x, ``opencv-contrib-python`` 4.x) that overwrite each other's
    files, so whether selective search works depends on their install order. This
    probes it in a subprocess; only when it fails does it remove all four cv2
    distributions, install :data:`OPENCV_PACKAGE` as ``requirements.txt`` pins it, and
    probe again, printing one line. pip's output is kept back (its resolver warns that
    packages asking for ``opencv-python`` lost it; the contrib build provides the same
    ``cv2``). When this kernel had already imported the old ``cv2``, it stops with
    :class:`RestartSession` instead (the same line, plus: restart, run again); the next run finds
    selective search working and installs nothing. Outside Colab it does nothing.
    """
    if "google.colab" not in sys.modules:
        return
    version, _ = selective_search_version()
    if version is not None:
        return
    before = installed_opencv()
    _pip("uninstall", "-y", *OPENCV_DISTRIBUTIONS)
    requirement = opencv_requirement()
    installed = _pip("install", requirement)
    if installed.returncode != 0:
        lines = (installed.stderr or installed.stdout).strip().splitlines() or ["no output"]
        raise RuntimeError(f"OpenCV: pip install {requirement} failed: {lines[-1]}")
    importlib.invalidate_caches()
    version, why = selective_search_version()
    if version is None:
        raise RuntimeError(f"OpenCV: installed {requirement}, but selective search fails: {why}")
    replaced = (
        f"OpenCV: replaced {', '.join(before) or 'no cv2 package'} with "
        f"{', '.join(installed_opencv())} for selective search"
    )
    if "cv2" in sys.modules:
        raise RestartSession(
            f"{replaced}; this session already imported the old cv2: {RESTART_ADVICE}"
        )
    print(replaced)

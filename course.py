#!/usr/bin/env python3
"""The course's commands; each sets itself up on first use.

    python3 course.py run [runner options]   # execute every notebook (full mode) into build/
    python3 course.py test [pytest options]  # unit tests + every notebook under nbval, fast mode
    python3 course.py colab [options]        # release check: the notebooks in a Colab-like venv
    python3 course.py publish --repository https://github.com/OWNER/NAME [--branch main]

On first use (and whenever a requirements file changes) ``run`` and ``test`` create
``.venv`` next to this file and install ``requirements-test.txt`` into it; then they run
the job with that environment's Python. ``colab`` builds its own environment of Colab's
versions under ``build/colab/`` (needs Python 3.13; see ``tools/colab_like.py``).
``publish`` points every notebook's "Open in Colab" badge and setup-cell clone at the
repository that hosts the course (``utils/colab.py``). Needs only Python 3.11+ and the
package index.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
REQUIREMENTS = [ROOT / "requirements.txt", ROOT / "requirements-test.txt"]
STAMP = VENV / ".course-requirements.sha256"
USAGE = __doc__.split("\n\n")[1]


def venv_python() -> Path:
    scripts = "Scripts" if os.name == "nt" else "bin"
    return VENV / scripts / ("python.exe" if os.name == "nt" else "python")


def requirements_digest() -> str:
    digest = hashlib.sha256()
    for path in REQUIREMENTS:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_environment() -> Path:
    """Create .venv and install the requirements unless it is already up to date."""
    if sys.version_info < (3, 11):  # noqa: UP036 - the oldest tested; say so clearly
        sys.exit(
            f"error: Python {sys.version.split()[0]} found: the course needs Python 3.11 or newer"
        )
    python = venv_python()
    wanted = requirements_digest()
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return python
    if not python.exists():
        print(f"Creating the course environment in {VENV.name}/ ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("Installing the requirements (first run: a few minutes) ...", flush=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(ROOT / "requirements-test.txt")], check=True)
    STAMP.write_text(wanted + "\n")
    return python


def publish(argv: list[str]) -> int:
    """Rewrite the notebooks' badges and clone URLs (standard library only, no .venv)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python3 course.py publish",
        description="Point every notebook's Colab badge and setup-cell clone at a repository.",
    )
    parser.add_argument("--repository", required=True, help="https://github.com/OWNER/NAME")
    parser.add_argument("--branch", default="main", help="the branch to open and clone")
    arguments = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from utils import colab

    try:
        changed = colab.publish(arguments.repository, arguments.branch)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"rewrote {path.relative_to(ROOT)}")
    if not changed:
        print(f"Nothing to change: the notebooks already open and clone {arguments.repository}.")
        return 0
    first = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))[0].name
    name = colab.github_name(arguments.repository)
    print(
        f"{len(changed)} file(s) changed. Commit and push them to {arguments.branch}; then "
        f"https://colab.research.google.com/github/{name}/blob/{arguments.branch}/notebooks/{first} "
        "opens the first notebook."
    )
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "colab", "publish"):
        print(USAGE, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "publish":
        return publish(rest)
    if command == "colab":
        return subprocess.run(
            [sys.executable, str(ROOT / "tools" / "colab_like.py"), *rest]
        ).returncode
    python = str(ensure_environment())
    if command == "run":
        job = [python, "-m", "utils.runner", *rest]
    else:
        workers = ["-n", "2", "--dist", "loadfile"] if (os.cpu_count() or 1) >= 2 else []
        job = [python, "-m", "pytest", *workers, *rest]
    return subprocess.run(job, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

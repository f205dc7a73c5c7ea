#!/usr/bin/env python3
"""The course's two commands; each sets itself up on first use.

    python3 course.py run [runner options]   # execute every notebook (full mode) into build/
    python3 course.py test [pytest options]  # unit tests + every notebook under nbval, fast mode

On first use (and whenever a requirements file changes) this creates ``.venv`` next
to this file and installs ``requirements-test.txt`` into it; then it runs the job with
that environment's Python. Needs only Python 3.10+ and the package index.
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
    if sys.version_info < (3, 10):  # noqa: UP036 - say so clearly on an old Python
        sys.exit(
            f"error: Python {sys.version.split()[0]} found: the course needs Python 3.10 or newer"
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


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print(USAGE, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    python = str(ensure_environment())
    if command == "run":
        job = [python, "-m", "utils.runner", *rest]
    else:
        workers = ["-n", "2", "--dist", "loadfile"] if (os.cpu_count() or 1) >= 2 else []
        job = [python, "-m", "pytest", *workers, *rest]
    return subprocess.run(job, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

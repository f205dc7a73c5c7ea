"""The release check: the notebooks in a Colab-like environment, both cv2 install orders.

    python3 course.py colab [--python PYTHON3.13] [--work DIR] [--orders ...] [--full NN ...]

Builds (once; again when ``tools/colab-constraints.txt`` changes) a virtual environment
of Colab's versions (``tools/colab-constraints.txt``: Python 3.13, TensorFlow 2.20, Keras
3.13, numpy 2.1, Colab's pinned Jupyter stack) with a stand-in ``google.colab`` module
that every kernel imports at start, as Colab's does. Wheels are downloaded once into
``WORK/wheels`` and installed from there; in the kernels pip also installs only from
there (the setup cell's OpenCV swap), so the runs need no network.

For each install order of Colab's three cv2 packages (``contrib-last``: opencv-python and
-headless 5.x, then opencv-contrib-python 4.x; ``plain-last``: the other way round) it
places a copy of this checkout where the setup cell's clone would put it
(``content/course/``, the notebooks opened from ``content/``), then:

1. every notebook's setup cell (with a check cell after it: selective search created,
   which cv2 packages are installed) from Colab's cv2 state, then again after a restart
   (a new kernel): the first run must end with working selective search, the second must
   install nothing;
2. the same after a cell that imported ``cv2`` before the setup cell: either selective
   search works, or the setup cell stops with the one restart line, and the next kernel
   works without installing anything;
3. notebooks 01 and 07 (``--full``) whole, in fast mode, under nbval (checked outputs
   compared with the stored ones), from Colab's cv2 state and again after a restart.

Writes ``WORK/summary.md`` and ``WORK/summary.json`` (each step's result and seconds) and
exits 1 when an expectation fails. Standard library only: it runs with any Python 3.10+.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "tools" / "colab-constraints.txt"
COLAB_PACKAGES = [
    "tensorflow",
    "keras",
    "numpy",
    "scikit-image",
    "scikit-learn",
    "matplotlib",
    "pycocotools",
    "tqdm",
    "psutil",
    "ipykernel",
    "ipython",
    "jupyter_client",
    "nbclient",
    "nbconvert",
    "nbformat",
]
HARNESS_PACKAGES = ["pytest>=8.1,<10", "nbval>=0.11,<0.12"]
"""Test tools on top of Colab's packages: nbval compares the checked outputs."""

OPENCV = ["opencv-python", "opencv-python-headless", "opencv-contrib-python"]
ORDERS = {
    "contrib-last": [["opencv-python", "opencv-python-headless"], ["opencv-contrib-python"]],
    "plain-last": [["opencv-contrib-python"], ["opencv-python", "opencv-python-headless"]],
}
FULL_NOTEBOOKS = ["01", "07"]
SWAP_LINE = "OpenCV: replaced "
RESTART_TEXT = "Runtime > Restart session"
CHECK_MARK = "COLAB-CHECK "
CHECK_CELL = f"""# Colab-like check: selective search, and the cv2 packages installed now.
import json

import cv2

from utils.colab import installed_opencv

cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
print("{CHECK_MARK}" + json.dumps({{"cv2": cv2.__version__, "packages": installed_opencv()}}))"""
STAND_IN_COLAB = '''"""Stand-in for Colab's google.colab package: the course only tests that it is imported."""
'''
KERNEL_CONFIG = """# Colab-like check: every kernel imports google.colab at start, as Colab's kernel does.
c.InteractiveShellApp.exec_lines = ["import google.colab"]
"""
PYTEST_INI = """[pytest]
addopts = -p no:cacheprovider --nbval-lax --nbval-sanitize-with course/tests/nbval_sanitize.cfg
    --nbval-cell-timeout 900 --nbval-kernel-startup-timeout 300
filterwarnings =
    ignore::DeprecationWarning
"""


@dataclass
class Step:
    """One row of the summary."""

    order: str
    step: str
    notebook: str
    ok: bool
    seconds: float
    opencv: str = ""
    note: str = ""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], text=True, capture_output=True, **kwargs)


def checked(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = run(command, **kwargs)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise SystemExit("error: " + " ".join(map(str, command[:4])) + " ...\n" + "\n".join(tail))
    return result


def find_python(explicit: str | None) -> str:
    """A Python 3.13 interpreter: --python, $COURSE_COLAB_PYTHON, python3.13 on PATH, pyenv."""
    candidates = [explicit, os.environ.get("COURSE_COLAB_PYTHON"), shutil.which("python3.13")]
    candidates += sorted(map(str, Path.home().glob(".pyenv/versions/3.13*/bin/python3")))
    for candidate in filter(None, candidates):
        version = run([candidate, "-c", "import sys; print(sys.version_info[:2])"]).stdout
        if version.strip() == "(3, 13)":
            return candidate
    raise SystemExit(
        "error: Python 3.13 not found (Colab runs 3.13): pass --python /path/to/python3.13"
    )


def opencv_requirement() -> str:
    sys.path.insert(0, str(ROOT))
    from utils.colab import opencv_requirement as read

    return read()


def stamp_of(python: str) -> str:
    digest = hashlib.sha256(CONSTRAINTS.read_bytes())
    digest.update(" ".join([python, *COLAB_PACKAGES, *HARNESS_PACKAGES]).encode())
    digest.update(opencv_requirement().encode())
    return digest.hexdigest()


def site_packages(venv: Path) -> Path:
    (found,) = (venv / "lib").glob("python3.*/site-packages")
    return found


def build_environment(work: Path, python: str) -> Path:
    """Colab's versions in ``work/venv`` (reused while the constraints are the same)."""
    venv, wheels = work / "venv", work / "wheels"
    stamp = venv / ".colab-like.sha256"
    if stamp.exists() and stamp.read_text().strip() == stamp_of(python):
        return venv
    say(f"Building the Colab-like environment in {venv} (first time: several minutes) ...")
    shutil.rmtree(venv, ignore_errors=True)
    checked([python, "-m", "venv", venv])
    pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check", "-q"]
    wanted = [*COLAB_PACKAGES, *HARNESS_PACKAGES, *OPENCV]
    say("  downloading wheels (once; TensorFlow alone is about 600 MB) ...")
    checked([*pip, "download", "-d", wheels, "-c", CONSTRAINTS, *wanted])
    checked([*pip, "download", "-d", wheels, "--no-deps", opencv_requirement()])
    say("  installing ...")
    local = ["--no-index", "--find-links", wheels]
    checked([*pip, "install", *local, "-c", CONSTRAINTS, *COLAB_PACKAGES, *HARNESS_PACKAGES])
    colab = site_packages(venv) / "google" / "colab"
    colab.mkdir(parents=True, exist_ok=True)
    (colab / "__init__.py").write_text(STAND_IN_COLAB)
    config = venv / "etc" / "ipython"
    config.mkdir(parents=True, exist_ok=True)
    (config / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)
    stamp.write_text(stamp_of(python) + "\n")
    return venv


def environment(venv: Path, work: Path) -> dict[str, str]:
    """What the kernels see: the venv first on PATH, pip offline, Keras' cache under work."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PIP_", "PYTHON", "COURSE_", "VIRTUAL_ENV", "JUPYTER", "IPYTHON"))
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(work / "wheels"),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        KERAS_HOME=str(work / "keras"),
        MPLBACKEND="Agg",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def cv2_entries(venv: Path) -> list[Path]:
    return [
        p
        for p in site_packages(venv).iterdir()
        if p.name == "cv2" or p.name.lower().startswith(("opencv_", "opencv-"))
    ]


def make_cv2_state(venv: Path, work: Path, order: str, env: dict[str, str]) -> Path:
    """Install Colab's three cv2 packages in ``order``; keep a copy of what they wrote."""
    pip = [venv / "bin" / "python", "-m", "pip", "-q"]
    run([*pip, "uninstall", "-y", *OPENCV, "opencv-contrib-python-headless"], env=env)
    pins = dict(
        line.split("==")
        for line in CONSTRAINTS.read_text().splitlines()
        if line.startswith("opencv")
    )
    for group in ORDERS[order]:
        checked(
            [*pip, "install", "--no-deps", *(f"{name}=={pins[name]}" for name in group)], env=env
        )
    snapshot = work / "cv2-states" / order
    shutil.rmtree(snapshot, ignore_errors=True)
    snapshot.mkdir(parents=True)
    for entry in cv2_entries(venv):
        shutil.copytree(entry, snapshot / entry.name, symlinks=True)
    return snapshot


def restore_cv2_state(venv: Path, snapshot: Path) -> None:
    """Put back exactly the files of Colab's cv2 state (as its runtime starts)."""
    for entry in cv2_entries(venv):
        shutil.rmtree(entry)
    for entry in snapshot.iterdir():
        shutil.copytree(entry, site_packages(venv) / entry.name, symlinks=True)


def colab_state(venv: Path, env: dict[str, str]) -> str:
    probe = (
        "import cv2; s = cv2.__version__ + ', ximgproc ' + str(hasattr(cv2, 'ximgproc'))\n"
        "try:\n    cv2.ximgproc.segmentation.createSelectiveSearchSegmentation(); s += ', works'\n"
        "except AttributeError as e:\n    s += ', fails: ' + str(e)\nprint(s)"
    )
    return run([venv / "bin" / "python", "-c", probe], env=env).stdout.strip()


def copy_checkout(destination: Path) -> None:
    """The tracked files of this checkout, as the setup cell's ``git clone`` would give them."""
    shutil.rmtree(destination, ignore_errors=True)
    names = checked(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for name in filter(None, names):
        source = ROOT / name
        if source.is_file() and not name.startswith("data/"):
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def notebook_path(number: str) -> Path:
    (path,) = sorted((ROOT / "notebooks").glob(f"{number}_*.ipynb"))
    return path


def write_notebook(source: Path, destination: Path, cells: list[dict]) -> None:
    notebook = json.loads(source.read_text(encoding="utf-8"))
    notebook["cells"] = cells
    destination.write_text(json.dumps(notebook, indent=1), encoding="utf-8")


def code_cell(text: str) -> dict:
    lines = text.splitlines(keepends=True)
    return {
        "cell_type": "code",
        "metadata": {},
        "source": lines,
        "outputs": [],
        "execution_count": None,
    }


def run_setup(venv: Path, env: dict[str, str], content: Path, notebook: Path, label: str):
    """Run ``notebook`` (in content/) with the course runner; (passed, seconds, text, error)."""
    build = content.parent / "runs" / label
    shutil.rmtree(build, ignore_errors=True)
    command = [
        venv / "bin" / "python",
        "-m",
        "utils.runner",
        notebook,
        "--fast",
        "--build-dir",
        build,
    ]
    finished = run(command, cwd=content / "course", env=env)
    if not (build / "summary.json").exists():
        lines = (finished.stderr or finished.stdout).strip().splitlines() or ["no output"]
        return False, 0.0, "", f"the runner failed: {lines[-1]}"
    summary = json.loads((build / "summary.json").read_text())["notebooks"][0]
    executed = json.loads((build / "executed" / notebook.name).read_text())
    text = "\n".join(
        "".join(output.get("text", ""))
        + "".join(output.get("evalue", ""))
        + "".join(output.get("data", {}).get("text/plain", ""))
        for cell in executed["cells"]
        for output in cell.get("outputs", [])
    )
    return summary["status"] == "passed", summary["seconds"], text, summary.get("error") or ""


def check_result(text: str) -> dict | None:
    for line in text.splitlines():
        if line.startswith(CHECK_MARK):
            return json.loads(line[len(CHECK_MARK) :])
    return None


def setup_steps(order, number, venv, env, content, snapshot) -> list[Step]:
    """Setup cell from Colab's state, then after a restart; and with cv2 imported first."""
    source = notebook_path(number)
    cells = json.loads(source.read_text(encoding="utf-8"))["cells"]
    plain = content / f"setup-{source.name}"
    write_notebook(source, plain, [cells[0], cells[1], code_cell(CHECK_CELL)])
    steps = []
    restore_cv2_state(venv, snapshot)
    passed, seconds, text, error = run_setup(venv, env, content, plain, f"{order}-{number}-first")
    first = check_result(text)
    swapped = SWAP_LINE in text
    note = "swapped OpenCV" if swapped else "nothing installed"
    steps.append(
        Step(
            order,
            "setup, first run",
            number,
            passed and first is not None,
            seconds,
            first["cv2"] if first else "",
            note if passed else error,
        )
    )
    passed, seconds, text, error = run_setup(venv, env, content, plain, f"{order}-{number}-restart")
    second = check_result(text)
    unchanged = first is not None and second is not None and second["packages"] == first["packages"]
    ok = passed and unchanged and SWAP_LINE not in text
    steps.append(
        Step(
            order,
            "setup, after restart",
            number,
            ok,
            seconds,
            second["cv2"] if second else "",
            "nothing installed" if ok else (error or "installed again or changed packages"),
        )
    )
    return steps


def imported_first_steps(order, number, venv, env, content, snapshot) -> list[Step]:
    """A cell imports cv2 before the setup cell: works, or one restart line then works."""
    source = notebook_path(number)
    cells = json.loads(source.read_text(encoding="utf-8"))["cells"]
    early = content / f"cv2-first-{source.name}"
    write_notebook(
        source, early, [cells[0], code_cell("import cv2"), cells[1], code_cell(CHECK_CELL)]
    )
    plain = content / f"setup-{source.name}"
    restore_cv2_state(venv, snapshot)
    passed, seconds, text, error = run_setup(venv, env, content, early, f"{order}-cv2-first")
    stopped = not passed and RESTART_TEXT in error and SWAP_LINE in text
    note = "works" if passed else (f"stopped: {error}" if stopped else error)
    result = check_result(text)
    steps = [
        Step(
            order,
            "cv2 imported first",
            number,
            passed or stopped,
            seconds,
            result["cv2"] if result else "",
            note,
        )
    ]
    passed, seconds, text, error = run_setup(venv, env, content, plain, f"{order}-cv2-restart")
    result = check_result(text)
    ok = passed and result is not None and SWAP_LINE not in text
    steps.append(
        Step(
            order,
            "cv2 imported first, after restart",
            number,
            ok,
            seconds,
            result["cv2"] if result else "",
            "nothing installed" if ok else error,
        )
    )
    return steps


def full_steps(order, number, venv, env, content, snapshot) -> list[Step]:
    """The whole notebook in fast mode under nbval, from Colab's state and after a restart."""
    source = notebook_path(number)
    shutil.copy(source, content / source.name)
    restore_cv2_state(venv, snapshot)
    steps = []
    for label in ("first run", "after restart"):
        started = time.perf_counter()
        result = run(
            [
                venv / "bin" / "python",
                "-m",
                "pytest",
                "-q",
                "-c",
                content / "pytest.ini",
                "--rootdir",
                content,
                content / source.name,
            ],
            cwd=content,
            env=env,
        )
        seconds = round(time.perf_counter() - started, 1)
        lines = result.stdout.strip().splitlines()
        tail = re.sub(r"\s+in [0-9.]+s.*$", "", lines[-1] if lines else "no output").strip("= ")
        failures = [line for line in lines if line.startswith("FAILED")]
        note = tail + (f"; {failures[0]}" if failures else "")
        steps.append(
            Step(
                order,
                f"notebook, fast mode, {label}",
                number,
                result.returncode == 0,
                seconds,
                "",
                note,
            )
        )
    return steps


def write_summary(work: Path, steps: list[Step], states: dict[str, str]) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform(terse=True)}"
    lines = [
        "# Colab-like check",
        "",
        f"Machine: {machine}. Environment: {CONSTRAINTS.relative_to(ROOT)}.",
        "",
        *(f"- Colab's cv2 state, {order}: {state}" for order, state in states.items()),
        "",
        "| order | step | notebook | result | seconds | cv2 after | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        result = "ok" if s.ok else "FAILED"
        lines.append(
            f"| {s.order} | {s.step} | {s.notebook} | {result} | {s.seconds:.1f} | {s.opencv} | {s.note} |"
        )
    total = sum(s.seconds for s in steps)
    lines += ["", f"{sum(s.ok for s in steps)} of {len(steps)} steps ok; {total:.0f} s of runs."]
    text = "\n".join(lines) + "\n"
    (work / "summary.md").write_text(text, encoding="utf-8")
    data = {"machine": machine, "states": states, "steps": [asdict(s) for s in steps]}
    (work / "summary.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return text


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 course.py colab", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--python", help="a Python 3.13 interpreter (default: found on PATH/pyenv)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "colab", help="work folder")
    parser.add_argument("--orders", nargs="+", choices=list(ORDERS), default=list(ORDERS))
    parser.add_argument(
        "--setup",
        nargs="*",
        default=None,
        metavar="NN",
        help="notebooks whose setup cell runs (default: all)",
    )
    parser.add_argument(
        "--full",
        nargs="*",
        default=FULL_NOTEBOOKS,
        metavar="NN",
        help="notebooks run whole in fast mode (default: 01 07)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    work = arguments.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    python = find_python(arguments.python)
    venv = build_environment(work, python)
    env = environment(venv, work)
    setup = arguments.setup
    if setup is None:
        setup = sorted(p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    steps, states = [], {}
    for order in arguments.orders:
        say(f"[{order}] Colab's cv2 packages installed in this order ...")
        snapshot = make_cv2_state(venv, work, order, env)
        states[order] = colab_state(venv, env)
        say(f"[{order}] cv2 before the setup cell: {states[order]}")
        content = work / f"content-{order}"
        shutil.rmtree(content, ignore_errors=True)
        copy_checkout(content / "course")
        shutil.copy(content / "course" / "conftest.py", content / "conftest.py")
        (content / "pytest.ini").write_text(PYTEST_INI)
        jobs = [(setup_steps, number) for number in setup]
        jobs += [(imported_first_steps, setup[0])] if setup else []
        jobs += [(full_steps, number) for number in arguments.full]
        for job, number in jobs:
            for step in job(order, number, venv, env, content, snapshot):
                steps.append(step)
                status = "ok" if step.ok else "FAILED"
                say(
                    f"[{order}] {step.step} {number}: {status} in {step.seconds:.1f} s "
                    f"{step.opencv} {step.note}"
                )
            write_summary(work, steps, states)
    print(write_summary(work, steps, states))
    return 0 if all(step.ok for step in steps) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

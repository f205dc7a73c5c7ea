"""utils.colab: the repository in one place, the notebooks' badge and setup cell, OpenCV in Colab."""

import json
import shutil
import subprocess
import sys
import types

import pytest

from utils import colab


def notebooks():
    return sorted(colab.NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", notebooks(), ids=lambda path: path.stem[:2])
def test_every_notebook_opens_and_clones_the_published_repository(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    heading = "".join(cells[0]["source"])
    assert heading.count("colab.research.google.com/github/") == 1
    assert colab.badge_markdown(path.name) in heading
    assert "".join(cells[1]["source"]) == colab.setup_cell_source()


def test_the_repository_is_named_nowhere_else():
    name = colab.github_name(colab.REPOSITORY)
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=colab.ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    mentions = [
        path
        for path in tracked
        if not path.startswith("notebooks/")
        and path != "utils/colab.py"
        and (colab.ROOT / path).is_file()
        and name in (colab.ROOT / path).read_text(encoding="utf-8", errors="replace")
    ]
    assert mentions == []


@pytest.mark.parametrize(
    "url, name",
    [
        ("https://github.com/someone/course", "someone/course"),
        ("https://github.com/some-one/my.course.git", "some-one/my.course"),
        ("https://github.com/a_b/c/", "a_b/c"),
    ],
)
def test_github_name(url, name):
    assert colab.github_name(url) == name


@pytest.mark.parametrize(
    "url",
    ["https://gitlab.com/someone/course", "github.com/someone/course", "https://github.com/x", 3],
)
def test_github_name_refuses_what_colab_cannot_open(url):
    with pytest.raises(ValueError, match=r"repository=.*: expected https://github.com/OWNER/NAME"):
        colab.github_name(url)


def test_badge_and_setup_cell_refuse_a_bad_branch():
    with pytest.raises(ValueError, match=r"branch='a b': expected a git branch name"):
        colab.badge_markdown("01_x.ipynb", branch="a b")
    with pytest.raises(ValueError, match=r"branch=''"):
        colab.setup_cell_source(branch="")


def test_publish_rewrites_badges_clone_and_constants_only(tmp_path):
    notebook_dir = tmp_path / "notebooks"
    shutil.copytree(colab.NOTEBOOK_DIR, notebook_dir)
    module = tmp_path / "colab.py"
    shutil.copy(colab.ROOT / "utils" / "colab.py", module)
    before = {path.name: json.loads(path.read_text()) for path in notebook_dir.glob("*.ipynb")}

    changed = colab.publish(
        "https://github.com/teacher/course-fork", "spring", notebook_dir=notebook_dir, module=module
    )

    assert len(changed) == len(before) + 1
    for path in sorted(notebook_dir.glob("*.ipynb")):
        after = json.loads(path.read_text())
        old = before[path.name]
        assert after["cells"][2:] == old["cells"][2:] and after["metadata"] == old["metadata"]
        heading = "".join(after["cells"][0]["source"])
        url = f"colab.research.google.com/github/teacher/course-fork/blob/spring/notebooks/{path.name}"
        assert url in heading and colab.github_name(colab.REPOSITORY) not in heading
        assert heading.replace(url, "") == "".join(old["cells"][0]["source"]).replace(
            f"colab.research.google.com/github/{colab.github_name(colab.REPOSITORY)}/blob/{colab.BRANCH}/notebooks/{path.name}",
            "",
        )
        setup = "".join(after["cells"][1]["source"])
        assert '"https://github.com/teacher/course-fork", "spring"' in setup
        assert setup == colab.setup_cell_source("https://github.com/teacher/course-fork", "spring")
    code = module.read_text()
    assert 'REPOSITORY = "https://github.com/teacher/course-fork"' in code
    assert 'BRANCH = "spring"' in code
    again = colab.publish(
        "https://github.com/teacher/course-fork", "spring", notebook_dir=notebook_dir, module=module
    )
    assert again == []


def test_publish_keeps_the_stored_layout_byte_for_byte(tmp_path):
    notebook_dir = tmp_path / "notebooks"
    shutil.copytree(colab.NOTEBOOK_DIR, notebook_dir)
    module = tmp_path / "colab.py"
    shutil.copy(colab.ROOT / "utils" / "colab.py", module)
    assert (
        colab.publish(colab.REPOSITORY, colab.BRANCH, notebook_dir=notebook_dir, module=module)
        == []
    )


def test_publish_refuses_a_notebook_without_its_badge(tmp_path):
    path = tmp_path / "01_x.ipynb"
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# 01 no badge"]},
        {"cell_type": "code", "metadata": {}, "source": ["config = setup_notebook()"]},
    ]
    path.write_text(json.dumps({"cells": cells, "metadata": {}}))
    with pytest.raises(ValueError, match=r"01_x.ipynb: expected one Colab badge"):
        colab.publish(colab.REPOSITORY, notebook_dir=tmp_path, module=tmp_path / "m.py")
    with pytest.raises(ValueError, match=r"notebook_dir=.*: expected NN_\*.ipynb"):
        colab.publish(colab.REPOSITORY, notebook_dir=tmp_path / "none")


def test_opencv_requirement_is_read_from_requirements_txt(tmp_path):
    requirement = colab.opencv_requirement()
    assert requirement.startswith("opencv-contrib-python-headless>=")
    (tmp_path / "r.txt").write_text("numpy\n# opencv-contrib-python-headless<1\nopencv-python\n")
    with pytest.raises(ValueError, match=r"expected a opencv-contrib-python-headless line"):
        colab.opencv_requirement(tmp_path / "r.txt")


def test_selective_search_probe_runs_in_a_fresh_interpreter(monkeypatch):
    version, why = colab.selective_search_version()
    assert version is not None and version[0].isdigit() and why == ""
    monkeypatch.setattr(colab, "SELECTIVE_SEARCH_PROBE", "import cv2; cv2.no_such_module.x()")
    version, why = colab.selective_search_version()
    assert version is None and why.startswith("AttributeError") and "no_such_module" in why


class FakeColab:
    """Records pip commands and answers the subprocess probe like a Colab runtime would."""

    def __init__(self, monkeypatch, probes, pip_returncode=0):
        self.commands = []
        self.probes = list(probes)
        self.pip_returncode = pip_returncode
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
        monkeypatch.setattr(subprocess, "run", self.run)
        self.installed = [["opencv-python 5.0.0.93"], ["opencv-contrib-python-headless 5.0.0.93"]]
        monkeypatch.setattr(colab, "installed_opencv", lambda: self.installed.pop(0))

    def run(self, command, **_):
        if command[1] == "-c":
            ok = self.probes.pop(0)
            return subprocess.CompletedProcess(
                command, 0 if ok else 1, "5.0.0\n" if ok else "", "" if ok else "AttributeError: x"
            )
        self.commands.append(command[3:])
        code = self.pip_returncode if command[3] == "install" else 0
        return subprocess.CompletedProcess(command, code, "", "ERROR: No matching distribution")


def test_colab_with_working_selective_search_installs_nothing(monkeypatch, capsys):
    fake = FakeColab(monkeypatch, probes=[True])
    colab.ensure_colab_packages()
    assert fake.commands == [] and capsys.readouterr().out == ""


def test_colab_without_contrib_swaps_every_cv2_package_and_says_so(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "cv2", raising=False)
    fake = FakeColab(monkeypatch, probes=[False, True])
    colab.ensure_colab_packages()
    uninstall, install = fake.commands
    assert uninstall[:2] == ["uninstall", "-y"]
    assert set(colab.OPENCV_DISTRIBUTIONS) <= set(uninstall)
    assert install[:2] == ["install", colab.opencv_requirement()]
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out == (
        "OpenCV: replaced opencv-python 5.0.0.93 with opencv-contrib-python-headless 5.0.0.93 "
        "for selective search\n"
    )


def test_colab_with_cv2_already_imported_asks_for_a_restart_in_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cv2", types.ModuleType("cv2"))
    FakeColab(monkeypatch, probes=[False, True])
    with pytest.raises(
        colab.RestartSession,
        match=r"^OpenCV: replaced .*5\.0\.0\.93 for selective search; this session already imported the old cv2: use Runtime > Restart session, then run this cell again$",
    ) as error:
        colab.ensure_colab_packages()
    assert capsys.readouterr().out == ""
    assert error.value._render_traceback_() == [str(error.value)]
    assert "\n" not in str(error.value)


def test_colab_install_failure_is_one_line(monkeypatch):
    FakeColab(monkeypatch, probes=[False], pip_returncode=1)
    with pytest.raises(RuntimeError, match=r"pip install opencv.* failed: ERROR: No matching"):
        colab.ensure_colab_packages()


def test_colab_still_broken_after_the_swap_says_why(monkeypatch):
    monkeypatch.delitem(sys.modules, "cv2", raising=False)
    FakeColab(monkeypatch, probes=[False, False])
    with pytest.raises(RuntimeError, match=r"selective search fails: AttributeError: x"):
        colab.ensure_colab_packages()


def test_nothing_runs_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("nothing may run"))
    colab.ensure_colab_packages()


def test_course_py_publish_rewrites_a_copy_of_the_course(tmp_path):
    for name in ("course.py", "utils", "notebooks"):
        source = colab.ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    command = [sys.executable, "course.py", "publish", "--repository"]
    done = subprocess.run(
        [*command, "https://github.com/teacher/fork", "--branch", "v2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "rewrote utils/colab.py" in done.stdout
    assert "colab.research.google.com/github/teacher/fork/blob/v2/notebooks/01_" in done.stdout
    assert (
        'REPOSITORY = "https://github.com/teacher/fork"'
        in (tmp_path / "utils/colab.py").read_text()
    )
    refused = subprocess.run(
        [*command, "https://example.org/fork"], cwd=tmp_path, capture_output=True, text=True
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: repository='https://example.org/fork': expected")

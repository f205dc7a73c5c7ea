"""utils.runner: selection, clean storage, summaries, and real runs of tiny notebooks."""

import json
import os

import nbformat
import pytest

from utils import runner


def write_notebook(path, sources):
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# 99 · test")]
        + [nbformat.v4.new_code_cell(source) for source in sources]
    )
    notebook.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
    }
    notebook.cells[1].metadata["colab"] = {"base_uri": "x"}
    nbformat.write(notebook, path)
    return path


def test_find_notebooks_by_number_name_and_path(tmp_path):
    for name in ("01_first.ipynb", "02_second.ipynb", "notes.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in runner.find_notebooks([], tmp_path)] == [
        "01_first.ipynb",
        "02_second.ipynb",
    ]
    assert [p.name for p in runner.find_notebooks(["02"], tmp_path)] == ["02_second.ipynb"]
    assert [p.name for p in runner.find_notebooks(["01_first"], tmp_path)] == ["01_first.ipynb"]
    assert runner.find_notebooks([str(tmp_path / "notes.ipynb")], tmp_path)[0].name == "notes.ipynb"
    with pytest.raises(
        ValueError, match=r"notebook '07': expected one of the numbers or names 01_first, 02_second"
    ):
        runner.find_notebooks(["07"], tmp_path)


def test_refresh_requires_full_mode(capsys):
    with pytest.raises(SystemExit):
        runner.parse_arguments(["01", "--fast", "--refresh"])
    assert "--refresh stores full-mode outputs" in capsys.readouterr().err


def refresh(path, *, fast):
    """The runner on one notebook with --refresh, its build folder beside it."""
    build_dir = path.parent / "build"
    return runner.run_notebook(
        path, fast=fast, index=1, total=1, cell_timeout=60, build_dir=build_dir, refresh=True
    )


def test_passing_notebook_is_refreshed_cleanly(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    path = write_notebook(
        tmp_path / "99_pass.ipynb",
        ["import os\nprint('full' if os.environ['COURSE_FAST'] == '0' else 'wrong mode')", "1 + 1"],
    )
    result = refresh(path, fast=False)
    assert result.status == "passed" and result.failed_cell is None and result.cells == 2
    assert result.peak_memory_mb is None or result.peak_memory_mb > 0
    stored = nbformat.read(path, as_version=4)
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2]
    assert code[0].outputs[0].text == "full\n"
    assert code[1].outputs[0].data["text/plain"] == "2"
    assert all("execution" not in c.metadata and "colab" not in c.metadata for c in stored.cells)
    assert set(stored.metadata) <= {"kernelspec", "language_info", "widgets"}
    assert os.environ["COURSE_FAST"] == "1", "the runner must not change its own environment"
    assert (tmp_path / "build" / "executed" / "99_pass.ipynb").exists()
    assert "<html" in (tmp_path / "build" / "html" / "99_pass.html").read_text().lower()


def test_failing_notebook_names_the_cell_and_is_not_refreshed(tmp_path):
    path = write_notebook(tmp_path / "99_fail.ipynb", ["x = 1", "raise ValueError('boom')", "x"])
    before = path.read_text()
    result = refresh(path, fast=True)
    assert result.status == "failed"
    assert result.failed_cell == 2  # index among all cells: the title is cell 0
    assert result.error == "ValueError: boom"
    assert path.read_text() == before
    runner.write_summary([result], "fast", tmp_path / "build")
    summary = json.loads((tmp_path / "build" / "summary.json").read_text())
    assert summary["notebooks"][0]["status"] == "failed"
    assert "cell 2: ValueError: boom" in (tmp_path / "build" / "summary.md").read_text()


def test_main_exits_nonzero_and_names_the_failure(tmp_path, monkeypatch, capsys):
    path = write_notebook(tmp_path / "98_fail.ipynb", ["1 / 0"])
    code = runner.main([str(path), "--fast", "--build-dir", str(tmp_path / "build")])
    assert code == 1
    assert "FAILED 98_fail.ipynb at cell 1: ZeroDivisionError" in capsys.readouterr().err


def test_machine_paths_are_flagged():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")])
    notebook.cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"saved to {runner.ROOT}/data/x\n")
    ]
    assert runner.machine_paths_in_outputs(notebook) == ["cell 0: output shows a machine path"]

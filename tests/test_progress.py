"""utils.progress: a bar whose stored notebook output shows its final state, not 0 %."""

import nbformat
from nbclient import NotebookClient

from utils.course import ROOT
from utils.progress import progress


def test_outside_a_notebook_it_is_a_plain_tqdm_bar(capsys):
    assert list(progress(range(3), desc="plain")) == [0, 1, 2]
    assert "plain: 100%" in capsys.readouterr().err


def test_a_stored_notebook_keeps_the_final_state_of_the_bar():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom utils.progress import progress\n"
            "for _ in progress(range(20), desc='work'):\n    pass"
        )
    ]
    NotebookClient(notebook, kernel_name="python3", timeout=120).execute()
    (output,) = [o for o in notebook.cells[0].outputs if o.output_type == "display_data"]
    text = output.data["text/plain"]
    assert text.startswith("work: 100%") and "20/20" in text

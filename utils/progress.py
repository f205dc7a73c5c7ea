"""Progress bars that a stored notebook shows finished, not at 0 %.

``tqdm.auto`` draws a widget in Jupyter and a text bar elsewhere. A widget's plain-text
fallback (what GitHub, nbviewer and IDE previews show) is the bar's text at the moment it
was displayed: 0 %. ``progress`` displays the widget under a display id and, when the bar
closes, updates that display, so the stored fallback is the final line ("100% ...
150/150"). Outside a notebook it is ``tqdm.auto.tqdm`` itself. Introduced in notebook 06.
"""

from __future__ import annotations

from tqdm.auto import tqdm as auto_tqdm
from tqdm.notebook import tqdm as notebook_tqdm


class StoredNotebookBar(notebook_tqdm):
    """``tqdm.notebook.tqdm`` whose display is updated with its final state on ``close``."""

    def __init__(self, *args, **kwargs):
        from IPython.display import display

        super().__init__(*args, display=False, **kwargs)
        self._handle = display(self.container, display_id=True)
        self.displayed = True

    def close(self):
        super().close()
        if getattr(self, "_handle", None) is not None:
            self._handle.update(self.container)
            self._handle = None


def progress(iterable=None, *, total=None, desc: str | None = None, unit: str = "it", **options):
    """A ``tqdm`` bar over ``iterable`` (or of ``total`` steps, updated by hand) whose stored
    notebook output ends at its final state; ``options`` go to ``tqdm``."""
    bar = StoredNotebookBar if issubclass(auto_tqdm, notebook_tqdm) else auto_tqdm
    return bar(iterable, total=total, desc=desc, unit=unit, **options)

"""The course runner: execute notebooks headlessly, report progress, write a summary.

    python -m utils.runner                 # every notebook, full mode, into build/
    python -m utils.runner 01 03 --fast    # chosen notebooks, fast mode
    python -m utils.runner 01 --refresh    # full mode, and write the outputs back into notebooks/

Writes ``build/executed/*.ipynb``, ``build/html/*.html`` and ``build/summary.{md,json}``;
exits 1 naming the notebook and cell when a notebook fails. ``--refresh`` stores
outputs the way ``notebooks.md`` asks: one top-to-bottom run, no timing metadata,
file-descriptor capture off (as under nbval), editor metadata stripped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from utils.course import FAST_ENV, ROOT

NOTEBOOK_DIR = ROOT / "notebooks"
BUILD_DIR = ROOT / "build"
KERNEL_ARGUMENTS = ["--IPKernelApp.capture_fd_output=False"]
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
EDITOR_METADATA = ("colab", "id", "outputId", "ExecuteTime", "execution", "scrolled", "collapsed")
# "widgets" holds the final state of progress bars (tqdm.auto), so stored notebooks show them done.
NOTEBOOK_METADATA_KEPT = ("kernelspec", "language_info", "widgets")


@dataclass
class NotebookResult:
    """One notebook's outcome, as written to the summary."""

    notebook: str
    status: str = "not run"
    seconds: float = 0.0
    peak_memory_mb: float | None = None
    cells: int = 0
    failed_cell: int | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def find_notebooks(selection: list[str], notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """Resolve names, numbers ("01") or paths to notebook files; all of them when empty."""
    available = sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        if not available:
            raise ValueError(f"no notebooks found in {notebook_dir}")
        return available
    chosen = []
    for item in selection:
        path = Path(item)
        if path.suffix == ".ipynb" and path.exists():
            chosen.append(path.resolve())
            continue
        matches = [nb for nb in available if nb.name.startswith(item) or nb.stem == item]
        if len(matches) != 1:
            names = ", ".join(nb.stem for nb in available)
            raise ValueError(
                f"notebook {item!r}: expected one of the numbers or names {names}, "
                f"found {len(matches)} matches"
            )
        chosen.append(matches[0])
    return chosen


def clean_for_storage(notebook) -> None:
    """Strip editor and timing metadata so stored notebooks diff cleanly."""
    for cell in notebook.cells:
        for key in EDITOR_METADATA:
            cell.metadata.pop(key, None)
    for key in list(notebook.metadata):
        if key not in NOTEBOOK_METADATA_KEPT:
            notebook.metadata.pop(key)


def machine_paths_in_outputs(notebook) -> list[str]:
    """Cells whose outputs show this machine's absolute paths (they would not reproduce)."""
    markers = [str(ROOT), str(Path.home())]
    found = []
    for index, cell in enumerate(notebook.cells):
        text = json.dumps(cell.get("outputs", []))
        if any(marker in text for marker in markers):
            found.append(f"cell {index}: output shows a machine path")
    return found


class _MemoryWatcher:
    """Samples the kernel process tree's resident memory to find its peak."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.peak_bytes = 0
        self.pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        try:
            process = psutil.Process(self.pid)
            total = process.memory_info().rss
            total += sum(child.memory_info().rss for child in process.children(recursive=True))
        except psutil.Error:
            return
        self.peak_bytes = max(self.peak_bytes, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.pid is not None:
                self._sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class _Progress:
    """One status line: notebooks done / total, the cell being run and the elapsed time."""

    def __init__(self, index: int, total: int, name: str, cells: int, stream=sys.stderr):
        self.prefix = f"[{index}/{total}] {name}"
        self.cells = cells
        self.stream = stream
        self.interactive = stream.isatty()
        self.cell = 0
        self._shown_cell = 0
        self.started = time.perf_counter()
        self._last_plain = -1.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def line(self) -> str:
        minutes, seconds = divmod(int(self.elapsed()), 60)
        return (
            f"{self.prefix} | cell {self.cell}/{self.cells} | {minutes:02d}:{seconds:02d} elapsed"
        )

    def show(self) -> None:
        if self.interactive:
            self.stream.write("\r" + self.line().ljust(78))
        elif self.elapsed() - self._last_plain >= 30 or self.cell != self._shown_cell:
            # Logs (CI) get a line per cell and one every 30 s, not a carriage-return spinner.
            self._last_plain = self.elapsed()
            self._shown_cell = self.cell
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.show()

    def on_cell_execute(self, cell, cell_index, **_):
        self.cell = cell_index + 1
        self.show()

    def __enter__(self):
        self.show()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if self.interactive:
            self.stream.write("\n")


def run_notebook(
    path: Path,
    *,
    fast: bool,
    index: int,
    total: int,
    cell_timeout: int,
    build_dir: Path,
    refresh: bool,
) -> NotebookResult:
    """Execute one notebook from a fresh kernel; save it (and its HTML); return the result."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    result = NotebookResult(notebook=path.name)
    notebook = nbformat.read(path, as_version=4)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    result.cells = len(code_cells)
    # The kernel gets the mode, and inline figures whatever the caller's shell had set;
    # this process's own environment is left alone.
    kernel_env = {
        **os.environ,
        FAST_ENV: "1" if fast else "0",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }

    with (
        _MemoryWatcher() as memory,
        _Progress(index, total, path.name, len(notebook.cells)) as progress,
    ):
        client = NotebookClient(
            notebook,
            timeout=cell_timeout,
            kernel_name="python3",
            record_timing=False,
            extra_arguments=KERNEL_ARGUMENTS,
            resources={"metadata": {"path": str(path.parent)}},
            on_cell_execute=progress.on_cell_execute,
            on_notebook_start=lambda **_: setattr(
                memory, "pid", client.km.provisioner.pid if client.km else None
            ),
        )
        log = build_dir / "logs" / f"{path.stem}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        # The kernel's own stderr (TensorFlow's C++ start-up lines) goes to a log file,
        # not into the progress display.
        with open(log, "w", encoding="utf-8") as kernel_log:
            try:
                client.execute(env=kernel_env, stdout=kernel_log, stderr=kernel_log)
                result.status = "passed"
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
                result.status = "failed"
                result.failed_cell = progress.cell - 1
                lines = ANSI_CODES.sub("", str(error)).strip().splitlines() or [repr(error)]
                result.error = lines[-1][:300]
        result.seconds = round(progress.elapsed(), 1)
    result.peak_memory_mb = round(memory.peak_bytes / 2**20, 1) if memory.peak_bytes else None

    clean_for_storage(notebook)
    result.warnings = machine_paths_in_outputs(notebook)
    executed = build_dir / "executed" / path.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, executed)
    write_html(notebook, build_dir / "html" / f"{path.stem}.html")
    if refresh and result.status == "passed":
        nbformat.write(notebook, path)
    return result


def write_html(notebook, destination: Path) -> None:
    """Render an executed notebook as a static HTML page."""
    from nbconvert import HTMLExporter

    destination.parent.mkdir(parents=True, exist_ok=True)
    body, _ = HTMLExporter().from_notebook_node(notebook)
    destination.write_text(body, encoding="utf-8")


def write_summary(results: list[NotebookResult], mode: str, build_dir: Path) -> None:
    """Write ``summary.json`` and ``summary.md`` (a table, one row per notebook)."""
    import platform

    import psutil

    machine = (
        f"{platform.machine()}, {psutil.cpu_count()} CPU cores, Python {platform.python_version()}"
    )
    data = {"mode": mode, "machine": machine, "notebooks": [asdict(r) for r in results]}
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "summary.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# Course run ({mode} mode)",
        "",
        f"Machine: {machine}.",
        "",
        "| notebook | status | wall time | peak memory | note |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        memory = f"{r.peak_memory_mb:.0f} MB" if r.peak_memory_mb else "n/a"
        note = f"cell {r.failed_cell}: {r.error}" if r.status == "failed" else "; ".join(r.warnings)
        lines.append(f"| {r.notebook} | {r.status} | {r.seconds:.1f} s | {memory} | {note} |")
    total = sum(r.seconds for r in results)
    lines += ["", f"Total: {total:.0f} s for {len(results)} notebooks."]
    (build_dir / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m utils.runner", description=__doc__.split("\n")[0]
    )
    parser.add_argument("notebooks", nargs="*", help="numbers (01), names or paths; default: all")
    parser.add_argument(
        "--fast", action="store_true", help="fast mode (COURSE_FAST=1): small data, few epochs"
    )
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="write the executed outputs back into notebooks/ (full mode only)",
    )
    parser.add_argument(
        "--build-dir", type=Path, default=BUILD_DIR, help="output folder (default: build/)"
    )
    parser.add_argument("--cell-timeout", type=int, default=1800, help="seconds allowed per cell")
    arguments = parser.parse_args(argv)
    if arguments.refresh and arguments.fast:
        parser.error("--refresh stores full-mode outputs: drop --fast")
    if arguments.cell_timeout <= 0:
        parser.error(
            f"--cell-timeout={arguments.cell_timeout}: expected a positive number of seconds"
        )
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        notebooks = find_notebooks(arguments.notebooks)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    mode = "fast" if arguments.fast else "full"
    build_dir = arguments.build_dir.resolve()
    print(f"Running {len(notebooks)} notebook(s) in {mode} mode into {build_dir}", file=sys.stderr)
    results = []
    for index, path in enumerate(notebooks, start=1):
        result = run_notebook(
            path,
            fast=arguments.fast,
            index=index,
            total=len(notebooks),
            cell_timeout=arguments.cell_timeout,
            build_dir=build_dir,
            refresh=arguments.refresh,
        )
        results.append(result)
        memory = f", peak {result.peak_memory_mb:.0f} MB" if result.peak_memory_mb else ""
        print(f"  {path.name}: {result.status} in {result.seconds:.1f} s{memory}", file=sys.stderr)
        write_summary(results, mode, build_dir)
    failed = [r for r in results if r.status != "passed"]
    for r in failed:
        print(f"FAILED {r.notebook} at cell {r.failed_cell}: {r.error}", file=sys.stderr)
    print(f"Summary: {build_dir / 'summary.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

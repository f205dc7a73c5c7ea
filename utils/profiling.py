"""What a detector costs: its time per image, stage by stage, and its arithmetic per call.

``StageTimer`` and ``time_per_image`` are the one timing loop of the course's detectors
(``detect_images`` of R-CNN, Fast R-CNN, Faster R-CNN and the one-stage detector): images
one at a time, each stage timed with ``time.perf_counter``, averaged per image (introduced
in notebook 07).

``float_operations`` traces a function into a TensorFlow graph and adds up the
operations TensorFlow's graph profiler counts for it (a multiply-add is 2; a convolution
``2 * output pixels * kernel area * input channels * output channels``, a matrix product
``2 * m * n * k``, plus element-wise ops such as bias adds). Ops it has no count for
(pooling, gathers, RoI pooling's table lookups) add nothing, so the total is the network's
arithmetic, not its memory traffic or its per-call overheads. Introduced in notebook 08.

``time_side_by_side`` times several detectors on the same images taking turns, so that a
disturbance of a shared machine hits all of them alike (introduced in notebook 11).
"""

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from utils.checks import check_count
from utils.course import quiet_tensorflow_logs
from utils.progress import progress as progress_bar


class StageTimer:
    """Seconds spent in named stages: ``with timer("backbone"): ...`` adds to ``seconds``.

    ``stages`` fixes the names (and their order); timing another name is an error, so a
    typo cannot hide a stage. Introduced in notebook 07.
    """

    def __init__(self, stages: Sequence[str]):
        self.seconds = dict.fromkeys(stages, 0.0)

    @contextlib.contextmanager
    def __call__(self, stage: str):
        if stage not in self.seconds:
            raise ValueError(f"stage={stage!r}: expected one of {tuple(self.seconds)}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


def time_per_image(
    count: int,
    detect_one: Callable,
    stages: Sequence[str],
    *,
    description: str,
    proposal_stages: Sequence[str] = (),
    progress: bool = True,
) -> tuple[list, dict[str, float]]:
    """Run a detector image by image and average its stage times: ``(results, timing)``.

    ``detect_one(index, timer)`` handles image ``index``, timing its stages with ``timer``
    (a ``StageTimer`` of ``stages``), and returns ``(detections, proposal_count)``.
    ``timing`` maps each stage to its mean seconds per image, plus ``"total"`` (their sum),
    ``"detection"`` (the total without the ``proposal_stages``: what a detector costs once
    it has its proposals) and ``"proposals_per_image"``. A ``tqdm`` bar named
    ``description`` shows the progress when ``progress`` (``utils.progress``: a stored
    notebook shows it finished). Introduced in notebook 07.
    """
    timer = StageTimer(stages)
    for stage in proposal_stages:
        if stage not in timer.seconds:
            raise ValueError(f"proposal_stages has {stage!r}: expected one of {tuple(stages)}")
    results = []
    seen = 0
    bar = None
    if progress:
        bar = progress_bar(total=count, desc=description, unit="image")
    try:
        for index in range(count):
            detections, proposals = detect_one(index, timer)
            results.append(detections)
            seen += proposals
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    timing = {stage: total / max(count, 1) for stage, total in timer.seconds.items()}
    timing["total"] = sum(timing.values())
    timing["detection"] = timing["total"] - sum(timing[stage] for stage in proposal_stages)
    timing["proposals_per_image"] = seen / max(count, 1)
    return results, timing


def best_time(function: Callable, *args, repeats: int = 5) -> float:
    """The shortest of ``repeats`` timed calls of ``function(*args)``, in seconds.

    The least disturbed run, as Python's ``timeit`` advises for a shared machine; call the
    function once before (tracing, compiling) so that no timed call pays for it. Outputs
    are turned into NumPy inside the clock, so the work is really done. Introduced in
    notebook 07.
    """
    import numpy as np

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r}: expected an integer >= 1")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(np.asarray, function(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def float_operations(function, *input_specs: tf.TensorSpec) -> int:
    """Floating-point operations of one call of ``function`` on inputs of ``input_specs``.

    ``function`` takes tensors (a Keras model or layer, or any function of them);
    every ``tf.TensorSpec`` needs a fully known shape, since the count depends on it.
    """
    for index, spec in enumerate(input_specs):
        if not isinstance(spec, tf.TensorSpec) or not spec.shape.is_fully_defined():
            raise ValueError(
                f"input_specs[{index}]={spec!r}: expected a tf.TensorSpec with a fully known shape"
            )
    graph = tf.function(function).get_concrete_function(*input_specs).graph
    profiler = tf.compat.v1.profiler
    options = (
        profiler.ProfileOptionBuilder(profiler.ProfileOptionBuilder.float_operation())
        .with_empty_output()
        .build()
    )
    with quiet_tensorflow_logs():  # the TF1 profiler warns about its own internals
        return int(profiler.profile(graph, options=options).total_float_ops)


def time_side_by_side(
    detectors: Mapping[str, Callable],
    images: np.ndarray,
    *,
    chunk_size: int = 10,
    passes: int = 3,
    progress: bool = True,
) -> dict[str, tuple[list, dict[str, float]]]:
    """Several detectors timed on the same images, taking turns: ``{name: (detections, timing)}``.

    ``detectors`` maps a name to ``run(images) -> (detections, timing)`` (a detector's
    ``detect_images`` with its model bound and ``progress=False``). The images are cut
    into chunks of ``chunk_size``; in each of ``passes`` passes, every detector in turn
    runs on a chunk before the next chunk starts (who goes first rotates from chunk to
    chunk), so a disturbance of a shared machine hits all of them alike. For every detector
    and chunk the pass with the lowest ``"total"`` is kept (the least disturbed, as ``utils.profiling.best_time`` keeps the
    best call); ``timing`` is the image-weighted mean of those passes' per-image values.
    The detections are the first pass's (every pass gives the same). Introduced in
    notebook 11.
    """
    check_count("chunk_size", chunk_size)
    check_count("passes", passes)
    if not detectors:
        raise ValueError("detectors={}: expected at least one name -> run(images) entry")
    count = len(images)
    starts = range(0, count, chunk_size)
    best = {name: [None] * len(starts) for name in detectors}
    found = {name: [None] * len(starts) for name in detectors}
    bar = None
    if progress:
        bar = progress_bar(total=passes * len(starts), desc="detectors side by side", unit="chunk")
    names = list(detectors)
    for repeat in range(passes):
        for index, start in enumerate(starts):
            turn = (repeat * len(starts) + index) % len(names)
            for name in names[turn:] + names[:turn]:
                detections, timing = detectors[name](images[start : start + chunk_size])
                if found[name][index] is None:
                    found[name][index] = detections
                if best[name][index] is None or timing["total"] < best[name][index]["total"]:
                    best[name][index] = timing
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    sizes = [min(chunk_size, count - start) for start in starts]
    results = {}
    for name in detectors:
        keys = best[name][0].keys() if starts else ()
        timing = {
            key: sum(t[key] * n for t, n in zip(best[name], sizes, strict=True)) / max(count, 1)
            for key in keys
        }
        results[name] = ([d for chunk in found[name] for d in chunk], timing)
    return results

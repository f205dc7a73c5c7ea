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
"""

import contextlib
import time
from collections.abc import Callable, Sequence

import tensorflow as tf

from utils.course import quiet_tensorflow_logs


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
        from utils.progress import progress as progress_bar

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

"""How much arithmetic a network does: floating-point operations per call.

``float_operations`` traces a function into a TensorFlow graph and adds up the
operations TensorFlow's graph profiler counts for it (a multiply-add is 2; a convolution
``2 * output pixels * kernel area * input channels * output channels``, a matrix product
``2 * m * n * k``, plus element-wise ops such as bias adds). Ops it has no count for
(pooling, gathers, RoI pooling's table lookups) add nothing, so the total is the network's
arithmetic, not its memory traffic or its per-call overheads. Introduced in notebook 08.
"""

import tensorflow as tf

from utils.course import quiet_tensorflow_logs


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

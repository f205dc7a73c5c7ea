"""Receptive fields of a convolutional network: computed from its layers, measured by gradients.

A unit's receptive field is the window of input pixels that can change its value.
:func:`receptive_fields` computes it layer by layer from kernel sizes, strides,
dilations and padding (the recurrence of Araujo et al., "Computing receptive fields
of convolutional neural networks", Distill 2019); :func:`gradient_footprint` measures
it as the input pixels where one unit's gradient is non-zero. Introduced in notebook 02.

Conventions: everything is per axis, ``(rows, columns)``; a field's ``start`` is the
centre of unit ``(0, 0)``'s window in input pixel indices (a half-integer for even
windows, negative when padding reaches outside the image); boxes are float32
``[x1, y1, x2, y2]`` in continuous pixel coordinates (pixel column ``c`` spans
``[c, c + 1)``, the ``utils.shapes`` convention).
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from utils.checks import check_count, fail

_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
_POOLINGS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_PER_PIXEL = (
    keras.layers.InputLayer,
    keras.layers.Rescaling,
    keras.layers.Normalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.BatchNormalization,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
)
"""Layers that compute each output pixel from the same input pixel: fields pass through."""


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of every unit of one layer's output (per axis: rows, columns).

    - ``output_size``: the layer's output height and width.
    - ``size``: the field's height and width in input pixels.
    - ``jump``: input pixels between the fields of neighbouring units (product of strides).
    - ``start``: the centre of unit ``(0, 0)``'s field, in input pixel indices.
    """

    layer_name: str
    output_size: tuple[int, int]
    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]

    def box(self, row: int, col: int, clip_to: tuple[int, int] | None = None) -> np.ndarray:
        """The field of unit ``(row, col)`` as a float32 ``[x1, y1, x2, y2]`` box.

        ``clip_to=(height, width)`` cuts it to the image (padding lies outside it).
        """
        for name, value, limit in (
            ("row", row, self.output_size[0]),
            ("col", col, self.output_size[1]),
        ):
            if not 0 <= value < limit:
                raise ValueError(
                    f"{name}={value}: expected 0 <= {name} < {limit} ({self.layer_name} output)"
                )
        centre_y = self.start[0] + row * self.jump[0]
        centre_x = self.start[1] + col * self.jump[1]
        half_h, half_w = (self.size[0] - 1) / 2, (self.size[1] - 1) / 2
        box = np.array(
            [centre_x - half_w, centre_y - half_h, centre_x + half_w + 1, centre_y + half_h + 1],
            dtype=np.float32,
        )
        if clip_to is not None:
            height, width = clip_to
            box = np.clip(box, 0, [width, height, width, height]).astype(np.float32)
        return box


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _window(layer) -> tuple[tuple[int, int], tuple[int, int], str]:
    """(effective window, strides, padding) of a convolution or pooling layer."""
    if isinstance(layer, _CONVOLUTIONS):
        kernel, dilation = _pair(layer.kernel_size), _pair(layer.dilation_rate)
    else:
        kernel, dilation = _pair(layer.pool_size), (1, 1)
    effective = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))
    return effective, _pair(layer.strides), layer.padding


def _padding_before(size: int, window: int, stride: int, padding: str) -> tuple[int, int]:
    """(output size, padding added before the first pixel), TensorFlow's rule for each mode."""
    if padding == "same":
        output = math.ceil(size / stride)
        return output, max((output - 1) * stride + window - size, 0) // 2
    return (size - window) // stride + 1, 0


def receptive_fields(model: keras.Sequential) -> list[ReceptiveField]:
    """The receptive field after each layer of a ``keras.Sequential``, input first.

    Follows the layers while their output is a 4-D feature map ``[N, H, W, C]`` and
    stops at the first one that ends the spatial layout (Flatten, global pooling,
    Dense). Convolutions (also depthwise, separable, dilated), max and average pooling,
    ``ZeroPadding2D`` and per-pixel layers (activations, normalisation, dropout,
    rescaling) are understood; any other layer raises ``ValueError``.
    """
    if not isinstance(model, keras.Sequential):
        raise ValueError(
            f"model={type(model).__name__}: expected a keras.Sequential (a chain of layers)"
        )
    input_shape = tuple(model.inputs[0].shape) if model.inputs else None
    if input_shape is None or len(input_shape) != 4 or None in input_shape[1:3]:
        raise ValueError(
            f"model input shape {input_shape}: expected a fixed [N, H, W, C] image input "
            "(start the model with keras.Input((H, W, C)))"
        )
    spatial = tuple(int(s) for s in input_shape[1:3])
    size, jump, start = (1, 1), (1, 1), (0.0, 0.0)
    fields = [ReceptiveField("input", spatial, size, jump, start)]
    for layer in model.layers:
        if len(layer.output.shape) != 4:
            break
        if isinstance(layer, _CONVOLUTIONS + _POOLINGS):
            window, strides, padding = _window(layer)
            axes = [
                _padding_before(n, w, s, padding)
                for n, w, s in zip(spatial, window, strides, strict=True)
            ]
            start = tuple(
                st + ((w - 1) / 2 - before) * j
                for st, w, (_, before), j in zip(start, window, axes, jump, strict=True)
            )
            size = tuple(r + (w - 1) * j for r, w, j in zip(size, window, jump, strict=True))
            jump = tuple(j * s for j, s in zip(jump, strides, strict=True))
            spatial = tuple(output for output, _ in axes)
        elif isinstance(layer, keras.layers.ZeroPadding2D):
            (top, bottom), (left, right) = layer.padding
            start = (start[0] - top * jump[0], start[1] - left * jump[1])
            spatial = (spatial[0] + top + bottom, spatial[1] + left + right)
        elif not isinstance(layer, _PER_PIXEL):
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}): expected convolution, pooling, "
                "ZeroPadding2D or a per-pixel layer; its receptive field is not known here"
            )
        if tuple(layer.output.shape[1:3]) != spatial:
            raise ValueError(
                f"layer {layer.name!r}: computed output size {spatial}, Keras says "
                f"{tuple(layer.output.shape[1:3])}; expected them to agree"
            )
        fields.append(ReceptiveField(layer.name, spatial, size, jump, start))
    return fields


def gradient_footprint(
    model: keras.Model, images: np.ndarray, layer_name: str, row: int, col: int
) -> np.ndarray:
    """Summed ``|d unit / d input|`` over ``images`` for the unit at ``(row, col)``: ``[H, W]``.

    The unit is the sum of all channels of ``layer_name``'s output at that position;
    the absolute gradients are summed over images and input channels, so a pixel is
    zero only when it changed that unit in none of the images. Measures (never exceeds)
    the receptive field; ReLUs and max pooling can leave pixels without gradient for
    one image, which is why several images are used.
    """
    import tensorflow as tf

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images has shape {images.shape}: expected [N, H, W, C]")
    output = model.get_layer(layer_name).output
    if len(output.shape) != 4:
        raise ValueError(
            f"layer_name={layer_name!r} has output shape {tuple(output.shape)}: expected a "
            "feature map [N, H, W, C]"
        )
    height, width = output.shape[1:3]
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(
            f"(row, col)=({row}, {col}): expected a position inside the {height}x{width} map"
        )
    probe = keras.Model(model.inputs[0], output)
    inputs = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        unit = tf.reduce_sum(probe(inputs, training=False)[:, row, col, :])
    gradient = tape.gradient(unit, inputs).numpy()
    return np.abs(gradient).sum(axis=(0, 3))


def footprint_box(footprint: np.ndarray) -> np.ndarray:
    """The float32 ``[x1, y1, x2, y2]`` box tight around the non-zero pixels of ``[H, W]``."""
    footprint = np.asarray(footprint)
    if footprint.ndim != 2:
        raise ValueError(f"footprint has shape {footprint.shape}: expected [H, W]")
    rows, cols = np.nonzero(footprint)
    if rows.size == 0:
        raise ValueError("footprint is all zero: expected at least one pixel with gradient")
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float32)


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution or pooling along one axis: floor((n + 2p - k) / s) + 1.

    ``padding`` is the number of zeros added on *each* side (``p``). Keras' ``"valid"`` is
    ``p = 0``; its ``"same"`` pads so that the output is ceil(n / s), which for stride 1 and
    an odd kernel is ``p = (k - 1) / 2``. Introduced in notebook 02.
    """
    size = check_count("size", size)
    kernel = check_count("kernel", kernel)
    stride = check_count("stride", stride)
    padding = check_count("padding", padding, minimum=0)
    if kernel > size + 2 * padding:
        fail("kernel", kernel, f"<= size + 2 * padding = {size + 2 * padding}")
    return (size + 2 * padding - kernel) // stride + 1


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """What one layer costs for one input image.

    - ``parameters``: trainable and non-trainable weights (Keras' ``count_params``).
    - ``multiply_adds``: multiply-accumulate operations of a forward pass (a FLOP count
      is about twice this). Counted for Conv2D (H_out W_out k_h k_w C_in C_out / groups)
      and Dense (inputs x units); 0 for layers that do no multiply-adds with weights.
    - ``activations``: values in the layer's output (float32: 4 bytes each), what a
      training step keeps in memory for the backward pass.
    """

    layer_name: str
    kind: str
    parameters: int
    multiply_adds: int
    activations: int


def layer_costs(model: keras.Model) -> list[LayerCost]:
    """Parameters, multiply-adds and output activations per layer, for one image.

    ``model``: a built Keras model with a fixed input shape (e.g. ``keras.Sequential``
    from ``keras.Input``, or ``keras.applications.VGG16``). Convolutions with
    ``groups``/dilation and Dense layers on feature maps are counted exactly; other
    layers with weights (BatchNorm, depthwise) count 0 multiply-adds. Introduced in
    notebook 02.
    """
    if not isinstance(model, keras.Model):
        fail("model", type(model).__name__, "a built keras.Model")
    costs = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        shape = tuple(layer.output.shape[1:])
        if None in shape:
            fail(f"layer {layer.name!r} output shape", shape, "a fixed shape (no None)")
        activations = int(np.prod(shape))
        if isinstance(layer, keras.layers.Conv2D) and not isinstance(
            layer, keras.layers.DepthwiseConv2D | keras.layers.SeparableConv2D
        ):
            kernel_h, kernel_w = _pair(layer.kernel_size)
            channels_in = int(layer.input.shape[-1])
            per_output = kernel_h * kernel_w * channels_in // layer.groups
            multiply_adds = activations * per_output
        elif isinstance(layer, keras.layers.Dense):
            multiply_adds = activations * int(layer.input.shape[-1])
        else:
            multiply_adds = 0
        costs.append(
            LayerCost(
                layer.name, type(layer).__name__, layer.count_params(), multiply_adds, activations
            )
        )
    return costs

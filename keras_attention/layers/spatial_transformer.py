"""Spatial transformer (Jaderberg, Simonyan, Zisserman, Kavukcuoglu; NeurIPS 2015).

A localisation network regresses the parameters of a 2D transform from the input, a
grid generator maps the output grid through it, and a bilinear sampler reads the input
there (paper Sec. 3, Fig. 2). Everything is written with ``keras.ops`` (no
backend-specific resampling op).
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from keras_attention.layers._common import (check_choice, check_image_shape, check_positive,
                                            sublayer_kwargs)
from keras_attention.layers.factory import register_attention

#: Transform families: number of regressed parameters and their identity values.
TRANSFORMS = {
    "affine": (6, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)),  # theta = [[a, b, tx], [c, d, ty]]
    "attention": (3, (1.0, 0.0, 0.0)),  # s, tx, ty: isotropic scale + translation (Sec. 3.1)
    "translation": (2, (0.0, 0.0)),  # tx, ty
}


def params_to_theta(params, transform: str):
    """Regressed parameters ``(N, P)`` -> affine matrices ``(N, 2, 3)`` (float32)."""
    params = ops.cast(params, "float32")
    if transform == "affine":
        return ops.reshape(params, (-1, 2, 3))
    zeros = ops.zeros_like(params[:, :1])
    ones = ops.ones_like(zeros)
    if transform == "attention":
        s, tx, ty = params[:, 0:1], params[:, 1:2], params[:, 2:3]
        rows = [s, zeros, tx, zeros, s, ty]
    else:
        tx, ty = params[:, 0:1], params[:, 1:2]
        rows = [ones, zeros, tx, zeros, ones, ty]
    return ops.reshape(ops.concatenate(rows, axis=-1), (-1, 2, 3))


def affine_grid(theta, height: int, width: int):
    """Source coordinates ``(N, H*W, 2)`` (x, y, normalised to [-1, 1]) of an output grid.

    Target coordinates are ``linspace(-1, 1)`` over the output height and width (paper
    Sec. 3.2, Eq. 1: ``(x_s, y_s)^T = theta (x_t, y_t, 1)^T``), in row-major order.
    """
    ys, xs = ops.meshgrid(ops.linspace(-1.0, 1.0, height), ops.linspace(-1.0, 1.0, width), indexing="ij")
    target = ops.stack([ops.reshape(xs, (-1,)), ops.reshape(ys, (-1,)), ops.ones((height * width,))], axis=0)
    return ops.transpose(ops.matmul(ops.cast(theta, "float32"), target), (0, 2, 1))


def bilinear_sample(images, coords, height: int, width: int):
    """Bilinear sampling of NHWC ``images`` at normalised ``coords`` ``(N, P, 2)``.

    ``V = sum_nm U_nm max(0, 1 - |x - m|) max(0, 1 - |y - n|)`` (paper Eq. 5) with pixel
    coordinates ``x = (x_s + 1) (W - 1) / 2`` (-1 and 1 are the centres of the border
    pixels); points outside the image read zeros. Returns ``(N, height, width, C)`` in
    float32.
    """
    images, coords = ops.convert_to_tensor(images), ops.convert_to_tensor(coords, "float32")
    n = ops.shape(images)[0]
    in_h, in_w, channels = ops.shape(images)[1], ops.shape(images)[2], images.shape[-1]
    in_hf, in_wf = ops.cast(in_h, "float32"), ops.cast(in_w, "float32")
    x = (coords[..., 0] + 1.0) * (in_wf - 1.0) / 2.0
    y = (coords[..., 1] + 1.0) * (in_hf - 1.0) / 2.0
    x0, y0 = ops.floor(x), ops.floor(y)
    flat = ops.reshape(ops.cast(images, "float32"), (-1, channels))
    base = ops.reshape(ops.arange(n, dtype="int32") * in_h * in_w, (-1, 1))
    out = 0.0
    for dx in (0.0, 1.0):
        for dy in (0.0, 1.0):
            xc, yc = x0 + dx, y0 + dy
            weight = (1.0 - ops.abs(x - xc)) * (1.0 - ops.abs(y - yc))
            inside = (xc >= 0) & (xc <= in_wf - 1.0) & (yc >= 0) & (yc <= in_hf - 1.0)
            weight = ops.where(inside, weight, 0.0)
            xi = ops.cast(ops.clip(xc, 0.0, in_wf - 1.0), "int32")
            yi = ops.cast(ops.clip(yc, 0.0, in_hf - 1.0), "int32")
            values = ops.take(flat, base + yi * in_w + xi, axis=0)  # (N, P, C)
            out = out + values * weight[..., None]
    return ops.reshape(out, (n, height, width, channels))


@register_attention("stn", "spatial_transformer")
class SpatialTransformer(keras.layers.Layer):
    """Spatial transformer: localisation net -> affine grid -> bilinear sampling.

    ``theta = f_loc(U)``; output pixel ``i`` reads the input at
    ``theta (x_t_i, y_t_i, 1)^T`` by bilinear interpolation (paper Sec. 3.1-3.3,
    Eq. 1 and 5). The last localisation layer (a dense layer to the transform's
    parameters) has a zero kernel and the identity transform as bias, so the layer
    starts as the identity (when the output size equals the input size).

    Default localisation network (ours; the paper's differ per experiment): 5x5 conv
    (``localization_filters[0]``, ReLU) -> 2x2 max pool -> 5x5 conv
    (``localization_filters[1]``, ReLU) -> 2x2 max pool -> flatten -> dense
    (``localization_units``, ReLU) -> dense to the parameters. It needs H and W known at
    build time. Any Keras layer or model mapping the input to features can be given as
    ``localization`` instead; the regression layer is always added by this layer.

    Args:
        output_size: ``(height, width)`` of the output, or ``None`` for the input size.
        transform: ``"affine"`` (6 parameters), ``"attention"`` (isotropic scale and
            translation, 3; paper Sec. 3.1) or ``"translation"`` (2).
        localization: ``None`` for the default network, or a Keras layer/model taking the
            ``(N, H, W, C)`` input and returning features of any shape (flattened).
        localization_filters: the two conv widths of the default network.
        localization_units: hidden units of the default network's dense layer.
        return_attention: if True, ``call`` returns ``(outputs, theta)`` with the float32
            affine matrices ``theta`` ``(N, 2, 3)`` (the transform is this layer's attention).
        **kwargs: standard layer arguments.

    Input ``(N, H, W, C)``; output ``(N, out_h, out_w, C)`` in the compute dtype (grid
    and interpolation are computed in float32).

    Maps (``call_with_maps``): ``"theta"`` ``(N, 2, 3)``, ``"grid"`` ``(N, out_h, out_w, 2)``
    (float32 source coordinates ``(x, y)`` of every output pixel, normalised to [-1, 1]:
    -1 and 1 are the centres of the input's border pixels) and ``"output"`` (the sampled
    output, as returned).

    Raises:
        ValueError: unknown ``transform`` (the valid ones are listed), bad sizes or
            widths, input not 4D, unknown channels, unknown H/W with the default
            localisation network.

    Reference:
        Jaderberg, Simonyan, Zisserman, Kavukcuoglu. "Spatial Transformer Networks",
        NeurIPS 2015, Sec. 3 and Fig. 2; identity initialisation as in the paper's
        experiments (Sec. 4).
    """

    MAPS = {"theta": "float32 (N, 2, 3)", "grid": "float32 (N, out_h, out_w, 2) source (x, y) in [-1, 1]",
            "output": "(N, out_h, out_w, C) the sampled output"}

    def __init__(self, output_size: Sequence[int] | None = None, transform: str = "affine",
                 localization: keras.layers.Layer | None = None,
                 localization_filters: Sequence[int] = (16, 32), localization_units: int = 64,
                 return_attention: bool = False, **kwargs):
        super().__init__(**kwargs)
        if output_size is not None:
            if len(tuple(output_size)) != 2:
                raise ValueError(f"`output_size` must be (height, width) or None, received {output_size!r}.")
            output_size = tuple(check_positive("output_size", v, integer=True) for v in output_size)
        self.output_size = output_size
        self.transform = check_choice("transform", transform, TRANSFORMS)
        if isinstance(localization, dict):
            localization = keras.saving.deserialize_keras_object(localization)
        if localization is not None and not isinstance(localization, keras.layers.Layer):
            raise TypeError(f"`localization` must be a keras Layer/Model or None, "
                            f"received {type(localization).__name__}.")
        self.localization = localization
        filters = tuple(localization_filters)
        if len(filters) != 2:
            raise ValueError(f"`localization_filters` must hold two conv widths, received {filters!r}.")
        self.localization_filters = tuple(check_positive("localization_filters", f, integer=True)
                                          for f in filters)
        self.localization_units = check_positive("localization_units", localization_units, integer=True)
        self.return_attention = bool(return_attention)

    def build(self, input_shape):
        check_image_shape(type(self).__name__, input_shape)
        n, h, w, _ = input_shape
        if self.localization is None:
            if h is None or w is None or h < 4 or w < 4:
                raise ValueError("SpatialTransformer's default localisation network needs H and W "
                                 f"known and >= 4, received input shape {tuple(input_shape)}; pass "
                                 "`localization=` for other inputs.")
            f1, f2 = self.localization_filters
            self.loc_layers = [
                keras.layers.Conv2D(f1, 5, padding="same", activation="relu", **sublayer_kwargs(self, "loc_conv1")),
                keras.layers.MaxPooling2D(2, **sublayer_kwargs(self, "loc_pool1")),
                keras.layers.Conv2D(f2, 5, padding="same", activation="relu", **sublayer_kwargs(self, "loc_conv2")),
                keras.layers.MaxPooling2D(2, **sublayer_kwargs(self, "loc_pool2")),
                keras.layers.Flatten(**sublayer_kwargs(self, "loc_flatten")),
                keras.layers.Dense(self.localization_units, activation="relu", **sublayer_kwargs(self, "loc_fc")),
            ]
        else:
            self.loc_layers = [self.localization, keras.layers.Flatten(**sublayer_kwargs(self, "loc_flatten"))]
        shape = tuple(input_shape)
        for layer in self.loc_layers:
            if not layer.built:
                layer.build(shape)
            shape = layer.compute_output_shape(shape)
        count, identity = TRANSFORMS[self.transform]
        self.regressor = keras.layers.Dense(
            count, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(identity),
            **sublayer_kwargs(self, "loc_regressor"))
        self.regressor.build(shape)

    def _out_size(self, inputs):
        if self.output_size is not None:
            return self.output_size
        return inputs.shape[1], inputs.shape[2]

    def call(self, inputs, training=None):
        return self.call_with_maps(inputs, training)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"theta", "grid", "output"})``; see :mod:`keras_attention.layers._common`."""
        features = inputs
        for layer in self.loc_layers:
            features = layer(features, training=training) if layer is self.localization else layer(features)
        theta = params_to_theta(self.regressor(features), self.transform)
        height, width = self._out_size(inputs)
        if height is None or width is None:
            raise ValueError("SpatialTransformer needs a static output size: pass `output_size` "
                             "or an input with known H and W.")
        coords = affine_grid(theta, height, width)
        outputs = ops.cast(bilinear_sample(inputs, coords, height, width), self.compute_dtype)
        maps = {"theta": theta, "grid": ops.reshape(coords, (-1, height, width, 2)), "output": outputs}
        return ((outputs, theta) if self.return_attention else outputs), maps

    def compute_output_shape(self, input_shape):
        height, width = self.output_size or (input_shape[1], input_shape[2])
        shape = (input_shape[0], height, width, input_shape[3])
        return (shape, (input_shape[0], 2, 3)) if self.return_attention else shape

    def get_config(self):
        localization = (None if self.localization is None
                        else keras.saving.serialize_keras_object(self.localization))
        return {**super().get_config(),
                "output_size": None if self.output_size is None else list(self.output_size),
                "transform": self.transform, "localization": localization,
                "localization_filters": list(self.localization_filters),
                "localization_units": self.localization_units,
                "return_attention": self.return_attention}

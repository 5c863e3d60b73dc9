"""RA-CNN's attention crop: a square box cut out of an image and zoomed, differentiable in the box.

The box ``(t_x, t_y, t_l)`` (centre and half side, pixels) becomes a boxcar mask built from
logistic functions (paper Eq. 4-5)::

    h(x) = 1 / (1 + exp(-k x))
    M(x, y) = [h(x - t_x + t_l) - h(x - t_x - t_l)] * [h(y - t_y + t_l) - h(y - t_y - t_l)]

the image is multiplied by it, and the box's region of ``X * M`` is zoomed to the output size
by bilinear interpolation (paper Sec. 3.2). Both steps are separable in x and y, so the zoom is
two small matrix products (``Wy (X * M) Wx^T``, interpolation weights ``max(0, 1 - |u - j|)``):
``keras.ops`` only, no gather, and automatic differentiation gives the gradient with respect to
the box on every backend (through the mask and through the interpolation weights).

Coordinates: pixel ``j`` covers ``[j, j + 1)`` and has its centre at ``j + 0.5``; the mask is
evaluated at the pixel centres; output pixel ``i`` of an ``S``-pixel zoom reads the point
``t - t_l + (i + 0.5) 2 t_l / S`` (the centres of ``S`` equal cells of the box), clamped to the
border pixels' centres. ``x`` is the width axis (the second spatial axis of NHWC), ``y`` the
height axis.

Which implementation this follows, and why. The released Caffe layer (Jianlong-Fu/
Recurrent-Attention-CNN, ``attention_crop_layer.cu``) does not use the mask in its forward pass
(an OpenCV bilinear resize of the hard crop, clipped to the image); its backward pass is a
hand-made signal: the mask's derivative with a soft ``k = 0.05`` per pixel, evaluated on the
crop's sampling points, weighted by ``|dL/dcrop|`` normalised per channel and scaled by 1e-7,
plus a constant ``+0.005`` on ``t_l``. PyTorch reimplementations (jeong-tae/RACNN-pytorch)
multiply the image by the mask with ``k = 10`` per pixel in the forward pass. We implement the
paper's equations literally (mask in the forward pass, exact automatic gradients), with ``k`` per
pixel of the input, default 10 as the reimplementations ("k large enough" that ``M`` is a step,
paper Sec. 3.2): the forward pass is then the hard crop of the Caffe layer up to the half-pixel
transition at the box edges, and the gradient is the true one of that forward pass, which a
backend-agnostic layer can give without a custom backward.

Box constraints (applied before cropping, as the Caffe layer bounds ``t_l``): ``t_l`` is clipped
to ``[min_half_side * side, side / 2]`` and the centre so that the whole square lies inside the
image (the Caffe layer instead clips the rectangle to the image, which can make it non-square).
A clip passes no gradient outside its range, so an APN whose raw box leaves the range stops
learning (the collapse measured in docs/racnn.md). RA-CNN's APNs therefore produce boxes inside
the range by construction (:func:`boxes_from_units`), and the clip here only guards boxes given
directly.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from keras_attention.layers._common import check_positive, serializable


def logistic_step(x, k: float):
    """``h(x) = 1 / (1 + exp(-k x))`` (paper Eq. 5), in float32."""
    return ops.sigmoid(k * ops.cast(x, "float32"))


def constrain_boxes(boxes, size: float, min_half_side: float):
    """Clips boxes ``(N, 3)`` ``(t_x, t_y, t_l)`` (pixels) of a ``size``-pixel square image.

    ``t_l`` to ``[min_half_side * size, size / 2]``, then ``t_x``, ``t_y`` to ``[t_l, size - t_l]``
    (the square inside the image). Returns float32 ``(N, 3)``.
    """
    boxes = ops.cast(boxes, "float32")
    half = ops.clip(boxes[:, 2], min_half_side * size, size / 2.0)
    cx = ops.clip(boxes[:, 0], half, size - half)
    cy = ops.clip(boxes[:, 1], half, size - half)
    return ops.stack([cx, cy, half], axis=-1)


def boxes_from_units(units, size: float, min_half_side: float):
    """Maps ``(N, 3)`` values in ``(0, 1)`` (an APN's sigmoid outputs ``u_x, u_y, u_l``) to boxes
    ``(t_x, t_y, t_l)`` (pixels) that always satisfy :func:`constrain_boxes`' range:
    ``t_l = size * (min_half_side + (1/2 - min_half_side) u_l)`` and
    ``t_x = t_l + (size - 2 t_l) u_x`` (``t_y`` alike). Unlike clipping, every output keeps a
    non-zero gradient; ``u = 0.5`` is the centred box of half side ``size (min_half_side + 1/2) / 2``.
    Our choice, not the paper's (module docstring). Returns float32 ``(N, 3)``.
    """
    units = ops.cast(units, "float32")
    half = size * (min_half_side + (0.5 - min_half_side) * units[:, 2])
    cx = half + (size - 2.0 * half) * units[:, 0]
    cy = half + (size - 2.0 * half) * units[:, 1]
    return ops.stack([cx, cy, half], axis=-1)


def units_from_boxes(boxes, size: float, min_half_side: float):
    """The inverse of :func:`boxes_from_units` for boxes inside its range (NumPy-friendly)."""
    boxes = ops.cast(boxes, "float32")
    half = boxes[:, 2]
    u_l = (half / size - min_half_side) / (0.5 - min_half_side)
    span = ops.maximum(size - 2.0 * half, 1e-6)
    return ops.stack([(boxes[:, 0] - half) / span, (boxes[:, 1] - half) / span, u_l], axis=-1)


def boxcar_profiles(boxes, height: int, width: int, k: float):
    """The mask's separable factors at the pixel centres: ``(mask_y (N, H), mask_x (N, W))``.

    ``M = mask_y[:, :, None] * mask_x[:, None, :]`` (paper Eq. 4); float32.
    """
    boxes = ops.cast(boxes, "float32")
    cx, cy, half = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3]
    xs = ops.arange(width, dtype="float32")[None, :] + 0.5
    ys = ops.arange(height, dtype="float32")[None, :] + 0.5
    mask_x = logistic_step(xs - (cx - half), k) - logistic_step(xs - (cx + half), k)
    mask_y = logistic_step(ys - (cy - half), k) - logistic_step(ys - (cy + half), k)
    return mask_y, mask_x


def boxcar_mask(boxes, height: int, width: int, k: float):
    """The attention mask ``M`` ``(N, H, W)`` of boxes ``(N, 3)`` (paper Eq. 4-5), float32."""
    mask_y, mask_x = boxcar_profiles(boxes, height, width, k)
    return mask_y[:, :, None] * mask_x[:, None, :]


def interpolation_weights(start, half, out_size: int, in_size: int):
    """Bilinear weights ``(N, out_size, in_size)`` of the zoom of ``[start, start + 2 half]``.

    Output pixel ``i`` reads ``u_i = start + (i + 0.5) 2 half / out_size`` (pixels), i.e. the
    index coordinate ``u_i - 0.5`` clamped to ``[0, in_size - 1]``; weight of input pixel ``j``:
    ``max(0, 1 - |u_i - 0.5 - j|)``.
    """
    steps = (ops.arange(out_size, dtype="float32")[None, :] + 0.5) / out_size
    coords = start[:, None] + steps * 2.0 * half[:, None] - 0.5
    coords = ops.clip(coords, 0.0, in_size - 1.0)
    grid = ops.arange(in_size, dtype="float32")[None, None, :]
    return ops.relu(1.0 - ops.abs(coords[:, :, None] - grid))


def attention_crop(images, boxes, output_size: Sequence[int], k: float = 10.0):
    """Zooms the box of ``images * M`` to ``output_size`` (bilinear); float32 ``(N, h, w, C)``.

    ``boxes`` ``(N, 3)``: ``(t_x, t_y, t_l)`` in pixels, already constrained (see
    :func:`constrain_boxes`).
    """
    images = ops.cast(images, "float32")
    boxes = ops.cast(boxes, "float32")
    height, width = images.shape[1], images.shape[2]
    out_h, out_w = output_size
    mask_y, mask_x = boxcar_profiles(boxes, height, width, k)
    cx, cy, half = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    wy = interpolation_weights(cy - half, half, out_h, height) * mask_y[:, None, :]
    wx = interpolation_weights(cx - half, half, out_w, width) * mask_x[:, None, :]
    rows = ops.einsum("nih,nhwc->niwc", wy, images)
    return ops.einsum("njw,niwc->nijc", wx, rows)


@serializable
class AttentionCrop(keras.layers.Layer):
    """Crops a square box of each image and zooms it, differentiably in the box (RA-CNN).

    Args:
        output_size: ``(h, w)`` of the zoomed crop (224 x 224 in the paper).
        k: slope of the logistic steps of the boxcar mask, per pixel of the input (> 0; 10 as
            PyTorch reimplementations; the released Caffe layer uses 0.05 in its hand-made
            backward pass only; module docstring).
        min_half_side: lower bound of ``t_l`` as a fraction of the input side (in ``(0, 0.5]``;
            the released Caffe layer uses 0.01).

    Call: ``layer(images, boxes)`` with ``images`` ``(N, S, S, C)`` (square, static ``S``) and
    ``boxes`` ``(N, 3)`` ``(t_x, t_y, t_l)`` in pixels (centre x, centre y, half side) ->
    ``(crops (N, h, w, C)`` in the compute dtype, ``constrained boxes (N, 3)`` float32 pixels).

    Raises:
        ValueError: a non-positive ``k`` or size, ``min_half_side`` outside ``(0, 0.5]``, or
            non-square / dynamic-size images.

    Reference: Fu, Zheng & Mei, "Look Closer to See Better: Recurrent Attention Convolutional
    Neural Network for Fine-grained Image Recognition", CVPR 2017, Sec. 3.2, Eq. 4-5 and Fig. 3;
    github.com/Jianlong-Fu/Recurrent-Attention-CNN (``attention_crop_layer.cu``).
    """

    def __init__(self, output_size: Sequence[int] = (224, 224), k: float = 10.0, min_half_side: float = 1 / 6,
                 **kwargs):
        super().__init__(**kwargs)
        output_size = tuple(int(s) for s in output_size)
        if len(output_size) != 2:
            raise ValueError(f"`output_size` must be (height, width), received {output_size}.")
        for s in output_size:
            check_positive("output_size", s, integer=True)
        check_positive("k", k)
        if not 0 < float(min_half_side) <= 0.5:
            raise ValueError(f"`min_half_side` must be in (0, 0.5] (a fraction of the input side), "
                             f"received {min_half_side!r}.")
        self.output_size = output_size
        self.k = float(k)
        self.min_half_side = float(min_half_side)

    def _side(self, images_shape):
        height, width = images_shape[1], images_shape[2]
        if height is None or width is None or height != width:
            raise ValueError(f"AttentionCrop needs square images of static size, received shape "
                             f"{tuple(images_shape)}.")
        return int(height)

    def build(self, images_shape, boxes_shape=None):
        self._side(images_shape)
        self.built = True

    def call(self, images, boxes):
        side = self._side(images.shape)
        boxes = constrain_boxes(boxes, float(side), self.min_half_side)
        crops = attention_crop(images, boxes, self.output_size, self.k)
        return ops.cast(crops, self.compute_dtype), boxes

    def compute_output_shape(self, images_shape, boxes_shape=None):
        return (images_shape[0], *self.output_size, images_shape[-1]), (images_shape[0], 3)

    def get_config(self):
        return {**super().get_config(), "output_size": list(self.output_size), "k": self.k,
                "min_half_side": self.min_half_side}

"""Grad-CAM (Selvaraju et al., ICCV 2017) on any layer of a functional model, on every backend."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from keras_attention._errors import InvalidInputError
from keras_attention.explain._maps import _as_inputs
from keras_attention.explain._probe import tap_model


@dataclass
class GradCAM:
    """Grad-CAM maps of a batch.

    Attributes:
        layer: the layer whose output ``A`` (``(N, h, w, K)``) was used.
        class_indices: ``(N,)`` the class explained for each image.
        scores: ``(N,)`` the model's output for that class (the logit ``y^c``).
        outputs: ``(N, classes)`` the model's outputs.
        cams: ``(N, h, w)`` ``ReLU(sum_k alpha_k^c A^k)``, float32, not normalised.
        heatmaps: ``(N, H, W)`` ``cams`` divided by their per-image maximum (an all-zero map
            stays zero) and bilinearly resized to the input size, in [0, 1].
    """

    layer: str
    class_indices: np.ndarray
    scores: np.ndarray
    outputs: np.ndarray
    cams: np.ndarray
    heatmaps: np.ndarray


def default_layer(model: keras.Model) -> str:
    """The last layer (in graph order) with a 4D output: the last stage's feature map.

    Raises:
        InvalidInputError: the model has no layer with a 4D output.
    """
    for layer in reversed(model.layers):
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue  # several outputs or several nodes
        if len(shape) == 4 and not isinstance(layer, keras.layers.InputLayer):
            return layer.name
    raise InvalidInputError(f"{model.name!r} has no layer with a (N, H, W, C) output for Grad-CAM.")


def _gradients(tapped: keras.Model, images: np.ndarray, classes: np.ndarray | None):
    """``(outputs, features, d y^c / d features, c)`` as NumPy, with the backend's autodiff.

    ``classes=None`` explains each image's top class (chosen in the same forward pass).
    """
    features_shape = (len(images), *tapped.inputs[1].shape[1:])
    delta = np.zeros(features_shape, np.float32)
    images = keras.ops.convert_to_tensor(images)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        delta = tf.convert_to_tensor(delta)
        with tf.GradientTape() as tape:
            tape.watch(delta)
            result = tapped([images, delta], training=False)
            logits = tf.cast(result["outputs"], "float32")
            chosen = tf.argmax(logits, axis=-1) if classes is None else tf.constant(classes)
            score = tf.reduce_sum(tf.gather(logits, chosen, batch_dims=1))
        grads = tape.gradient(score, delta)
    elif backend == "jax":
        import jax
        import jax.numpy as jnp
        trainable = [v.value for v in tapped.trainable_variables]
        non_trainable = [v.value for v in tapped.non_trainable_variables]

        def score_fn(d):
            result, _ = tapped.stateless_call(trainable, non_trainable, [images, d], training=False)
            logits = result["outputs"].astype("float32")
            chosen = jnp.argmax(logits, axis=-1) if classes is None else jnp.asarray(classes)
            return jnp.sum(jnp.take_along_axis(logits, chosen[:, None], axis=1)), (result, chosen)

        (_, (result, chosen)), grads = jax.value_and_grad(score_fn, has_aux=True)(jnp.asarray(delta))
    elif backend == "torch":
        import torch
        delta = keras.ops.convert_to_tensor(delta).requires_grad_(True)
        result = tapped([images, delta], training=False)
        logits = result["outputs"].float()
        chosen = (logits.argmax(-1) if classes is None
                  else torch.as_tensor(classes, device=logits.device))
        score = logits.gather(1, chosen[:, None]).sum()
        (grads,) = torch.autograd.grad(score, delta)
    else:  # pragma: no cover - Keras backends without autodiff here (numpy, openvino)
        raise InvalidInputError(f"Grad-CAM needs gradients; the {backend!r} backend has none here.")
    to_numpy = lambda t: np.asarray(keras.ops.convert_to_numpy(t), np.float32)  # noqa: E731
    chosen = np.asarray(keras.ops.convert_to_numpy(chosen), np.int64)
    return to_numpy(result["outputs"]), to_numpy(result["features"]), to_numpy(grads), chosen


def grad_cam(model: keras.Model, images, *, layer: str | None = None, class_index=None,
             preprocessing=None, batch_size: int = 32) -> GradCAM:
    """Grad-CAM heatmaps of ``images`` for the predicted (or given) classes.

    ``alpha_k^c = mean_{ij} d y^c / d A^k_ij`` (global-average-pooled gradients of the class
    score before any softmax), ``L^c = ReLU(sum_k alpha_k^c A^k)`` (paper Eq. 1-2), with
    ``A`` the output of ``layer``; the gradient comes from the backend's autodiff
    (TensorFlow, JAX or PyTorch) through a zero input added at ``layer``
    (:func:`~keras_attention.explain.tap_model`). The paper upsamples ``L^c`` bilinearly to
    the image; :attr:`GradCAM.heatmaps` does that after normalising to [0, 1].

    Args:
        model: a functional model with one image input whose output is class scores
            (logits; with a softmax output the score explained is the probability).
        images: model inputs ``(N, H, W, C)``, or raw images with ``preprocessing``.
        layer: the layer whose output is ``A``; default :func:`default_layer` (the last
            4D output: the last stage's features).
        class_index: ``None`` (each image's top class), an int (the same class for every
            image) or one int per image.
        preprocessing: a :class:`keras_attention.data.Preprocessing` for raw images.
        batch_size: images per forward/backward pass.

    Returns:
        :class:`GradCAM`.

    Raises:
        InvalidInputError: unknown layer (closest names listed), a layer with several
            outputs, a class index out of range.

    Reference:
        Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra. "Grad-CAM: Visual Explanations
        from Deep Networks via Gradient-based Localization", ICCV 2017, Sec. 3, Eq. 1-2.
    """
    x = _as_inputs(images, preprocessing)
    layer = layer or default_layer(model)
    tapped = tap_model(model, layer)
    num_classes = int(model.output_shape[-1])
    if class_index is not None:
        wanted = np.array(np.broadcast_to(np.asarray(class_index, np.int64), (len(x),)))
        if wanted.min(initial=0) < 0 or wanted.max(initial=0) >= num_classes:
            raise InvalidInputError(f"class_index must be in [0, {num_classes}), received {class_index!r}.")
    outputs, features, grads, classes = [], [], [], []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        chosen = None if class_index is None else np.asarray(wanted[start:start + batch_size])
        for part, value in zip((outputs, features, grads, classes), _gradients(tapped, batch, chosen)):
            part.append(value)
    outputs, features, grads, classes = (np.concatenate(v) for v in (outputs, features, grads, classes))
    alpha = grads.mean(axis=(1, 2))  # (N, K)
    cams = np.maximum(np.einsum("nhwk,nk->nhw", features, alpha), 0.0).astype(np.float32)
    peak = cams.max(axis=(1, 2), keepdims=True)
    normalised = np.divide(cams, peak, out=np.zeros_like(cams), where=peak > 0)
    size = tuple(int(d) for d in x.shape[1:3])
    heatmaps = keras.ops.convert_to_numpy(keras.ops.image.resize(normalised[..., None], size,
                                                                 interpolation="bilinear"))[..., 0]
    scores = outputs[np.arange(len(outputs)), classes]
    return GradCAM(layer, classes, scores, outputs, cams,
                   np.clip(heatmaps, 0.0, 1.0).astype(np.float32))

"""See inside the models: attention maps, Grad-CAM and figures.

* :func:`attention_maps`: for every attention layer of a model (found by type), its maps
  (gates, attention weights, masks, sampling grids) from one forward pass over the same
  weights; :func:`probe_model` is that forward pass as a Keras model. A hard-attention
  model (Saccader) gives its glimpses instead: boxes, centres, per-glimpse logits and the
  policy's location probabilities.
* :func:`grad_cam`: Grad-CAM on any layer (default: the last stage), on TensorFlow, JAX and
  PyTorch.
* :func:`excitation_per_class`: per-class mean channel gates over a dataset (SENet Fig. 6).
* :mod:`~keras_attention.explain.figures`: matplotlib figures of all three.

Layers expose their maps through ``call_with_maps`` (see :mod:`keras_attention.layers._common`).
``python -m keras_attention.explain.gallery`` regenerates ``docs/explain.md``.
"""

from keras_attention.explain._gradcam import GradCAM, default_layer, grad_cam
from keras_attention.explain._maps import (CHANNEL_GATES, GLIMPSE_MAPS, AttentionMap, AttentionMaps,
                                           ExcitationPerClass, attention_maps, excitation_per_class, has_glimpses)
from keras_attention.explain._probe import (DEFAULT_QUERIES, attention_layers, has_maps, probe_model,
                                            stage_and_block, tap_model)
from keras_attention.explain.figures import (plot_channel_gates, plot_excitation_per_class,
                                             plot_explanation, save_figure)

__all__ = ["CHANNEL_GATES", "DEFAULT_QUERIES", "GLIMPSE_MAPS", "AttentionMap", "AttentionMaps", "ExcitationPerClass", "GradCAM",
           "attention_layers", "attention_maps", "default_layer", "excitation_per_class", "grad_cam", "has_glimpses", "has_maps",
           "plot_channel_gates", "plot_excitation_per_class", "plot_explanation", "probe_model", "save_figure",
           "stage_and_block", "tap_model"]

"""Weight conversion from other frameworks onto our models (no PyTorch needed at run time).

:mod:`keras_attention.convert.timm` converts timm's ResNet-family checkpoints (its ResNet, SK
ResNet, ResNeSt and ByobNet ResNet models) by tables of layer names (one per timm model class,
:mod:`keras_attention.convert.timm_layouts`); :mod:`keras_attention.weights` loads registry entries of format ``"timm"`` with
its :func:`~keras_attention.convert.timm.load_timm_files`. The maintainer tools built on it
(a checkpoint -> a Keras model folder, timm's configs -> registry entries; ``keras-attention
convert``) live in :mod:`keras_attention.convert.timm_tools`, which sits above the weights
package and is not imported here.
"""

from keras_attention.convert.timm import (TIMM_ARCHITECTURES, TIMM_LAYOUTS, ConversionError,
                                          create_model_from_timm, infer_model_kwargs, load_state_dict,
                                          load_timm_files, load_timm_weights, our_architecture,
                                          pretrained_cfg_from_timm, timm_layout, weight_mapping)

__all__ = ["TIMM_ARCHITECTURES", "TIMM_LAYOUTS", "ConversionError", "create_model_from_timm", "infer_model_kwargs",
           "load_state_dict", "load_timm_files", "load_timm_weights", "our_architecture",
           "pretrained_cfg_from_timm", "timm_layout", "weight_mapping"]

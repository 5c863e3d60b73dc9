"""Weight conversion from other frameworks onto our models (no PyTorch needed at run time)."""

from keras_attention.convert.timm import (TIMM_ARCHITECTURES, ConversionError, create_model_from_timm,
                                          infer_model_kwargs, load_state_dict, load_timm_weights,
                                          our_architecture, weight_mapping)

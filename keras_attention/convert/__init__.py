"""Weight conversion from other frameworks onto our models (no PyTorch needed at run time).

Importing this package registers the ``"timm"`` weights format with
:mod:`keras_attention.hub` (``hub.register_weights_format``), so registry entries of
format ``"timm"`` load through :func:`keras_attention.load`.
"""

import importlib.util

from keras_attention.convert.timm import (TIMM_ARCHITECTURES, ConversionError, create_model_from_timm,
                                          infer_model_kwargs, load_state_dict, load_timm_files,
                                          load_timm_weights, our_architecture, weight_mapping)

__all__ = ["TIMM_ARCHITECTURES", "ConversionError", "create_model_from_timm", "infer_model_kwargs",
           "load_state_dict", "load_timm_files", "load_timm_weights", "our_architecture", "weight_mapping"]


def _register_with_hub():
    if importlib.util.find_spec("keras_attention.hub") is None:  # hub module not present
        return False
    from keras_attention import hub

    hub.register_weights_format("timm", load_timm_files)
    return True


_register_with_hub()

"""One registered model per issue-16 family: saved and reloaded in a fresh process, run under
mixed precision.

These build full-size ImageNet models, which is slow under JAX, so CI runs this module on
TensorFlow only; the new layers' own save/reload and mixed-precision checks (run_layer_test)
run on TensorFlow, JAX and PyTorch, and tests/models/test_resnet.py builds these families
under JAX too.
"""

import keras
import numpy as np

import keras_attention as ka
from tests.helpers import check_fresh_process_reload_many, random_images

#: One model per family (the others share their structure, their layers have their own
#: contract tests, and tests/convert builds all 15 against timm): ByobNet with GC, SiLU, the
#: strided stem and the final conv; ByobNet ResNeXt with BAT and the -inf max pool; SK ResNet;
#: ResNeSt.
FAMILY_CASES = {"gc_resnet33ts": {}, "bat_resnext26ts": {"attention_kwargs": {"block_size": 2}},
                "sk_resnet18": {}, "resnest14d": {}}


def test_save_and_reload_in_fresh_process(tmp_path):
    cases = {}
    for name, kwargs in FAMILY_CASES.items():
        keras.utils.set_random_seed(0)
        cases[name] = (ka.create_model(name, input_shape=(64, 64, 3), num_classes=7, **kwargs),
                       random_images((2, 64, 64, 3), seed=1))
    check_fresh_process_reload_many(cases, tmp_path, atol=1e-5)


def test_mixed_precision():
    # float16, whose range is the risk (the layers' contract tests run bfloat16 too).
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        for name, kwargs in FAMILY_CASES.items():
            model = ka.create_model(name, input_shape=(64, 64, 3), num_classes=7, **kwargs)
            y = model(random_images((2, 64, 64, 3)))
            assert keras.backend.standardize_dtype(y.dtype) == "float32", name
            assert np.isfinite(keras.ops.convert_to_numpy(y)).all(), name
    finally:
        keras.config.set_dtype_policy(previous)

"""Non-local ResNet-50 (Wang et al., CVPR 2018): ResNet-50 with five non-local blocks.

The non-local blocks sit *between* residual blocks (applied to a block's output, after
its final ReLU), not inside them, via :func:`~keras_attention.models.resnet.build_resnet`'s
``after_block`` hook. The placement is the paper's "5-block" network (Sec. 5.1, Table 2b:
"5 blocks: 3 to res4 and 2 to res3, to every other residual block"), which the official
release builds with ``NONLOCAL.LAYER_MOD = 2`` (a block after residual blocks ``idx`` with
``idx % 2 == 1``: res3 blocks 1 and 3, res4 blocks 1, 3 and 5; ``lib/models/resnet_video.py``,
``lib/models/resnet_helper.py``). In our stage numbering (timm's layer1..layer4, 1-based)
res3 is stage 2 and res4 is stage 3.

The paper's experiments are on video (C2D = this 2D ResNet-50 applied per frame, Kinetics)
and COCO; this is the same network applied to images. The non-local blocks use the
official defaults: embedded Gaussian, inner width C/2, 2x2 max-pool sub-sampling of
``phi``/``g``, 1/sqrt(d) scaling, BN with zero-initialised gamma after ``W_z``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras

from keras_attention.layers.non_local import NonLocalBlock
from keras_attention.models.resnet import build_resnet
from keras_attention.registry import register_model

#: Official 5-block placement: {stage (1-based, timm layer index): 0-based blocks}.
NL_RESNET50_BLOCKS = {2: (1, 3), 3: (1, 3, 5)}


@register_model
def nl_resnet50(nonlocal_blocks: Mapping[int, Sequence[int]] | None = None,
                nonlocal_kwargs: dict | None = None, return_attention: bool = False, **kwargs):
    """Non-local ResNet-50 (Wang et al. 2018): 5 non-local blocks in stages 2-3 (res3/res4).

    Args:
        nonlocal_blocks: ``{stage: blocks}`` after which a non-local block is inserted
            (stage 1-based as timm's ``layer1..layer4``, block 0-based); default
            :data:`NL_RESNET50_BLOCKS` (res3 blocks 1, 3; res4 blocks 1, 3, 5).
        nonlocal_kwargs: arguments of :class:`~keras_attention.layers.NonLocalBlock`
            (``mode``, ``subsample``, ``scale``, ...); official defaults otherwise.
        return_attention: add every non-local block's attention ``(N, H*W, H'*W')`` to the
            outputs (``[logits, attention_0, ...]``, in block order). Either way the maps
            are ``model.get_layer("stage2_block1_nonlocal").output[1]`` etc.
        **kwargs: arguments of :func:`~keras_attention.models.resnet.build_resnet`
            (``num_classes``, ``input_shape``, ``include_top``, ``pooling``, ``attention``, ...).

    The non-local layers are named ``stage{i}_block{j}_nonlocal``. Input H and W must be
    at least 32 so that res4 maps are >= 2x2 for the 2x2 sub-sampling.

    Reference:
        Wang, Girshick, Gupta, He. "Non-local Neural Networks", CVPR 2018, Sec. 4-5,
        Table 2b; github.com/facebookresearch/video-nonlocal-net.
    """
    blocks = {int(s): tuple(b) for s, b in (nonlocal_blocks or NL_RESNET50_BLOCKS).items()}
    options = {**(nonlocal_kwargs or {}), "return_attention": True}
    attention_maps = []

    def after_block(stage, block):
        if block not in blocks.get(stage, ()):
            return None
        layer = NonLocalBlock(**options, name=f"stage{stage}_block{block}_nonlocal")

        def apply(x):
            y, attention = layer(x)
            attention_maps.append(attention)
            return y

        return apply

    kwargs.setdefault("name", "nl_resnet50")
    model = build_resnet("bottleneck", (3, 4, 6, 3), after_block=after_block, **kwargs)
    if return_attention:
        model = keras.Model(model.input, [*model.outputs, *attention_maps], name=model.name)
    return model

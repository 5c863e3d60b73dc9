"""Training any registry model on a prepared dataset, a class folder or a TFDS dataset
(``keras-attention train``), on TensorFlow, JAX or PyTorch.

One call, :func:`train`, does a whole run from a :class:`TrainConfig` (usually a recipe
file from ``weights/_recipes/`` plus command-line overrides):

* data: :mod:`keras_attention.data`, augmented by the config's recipe, deterministic from
  ``seed`` (epoch ``e`` depends only on ``(seed, e)``), through grain (every backend) or
  ``tf.data`` (``pipeline="tf"``);
* model: ``keras_attention.create_model(model, num_classes=..., input_shape=...,
  **model_kwargs)``;
* optimizer, schedule and weight decay: :mod:`keras_attention.training.optim`;
* mixed precision by Keras dtype policy (``mixed_float16`` with dynamic loss scaling that
  counts skipped steps, or ``mixed_bfloat16``);
* distribution: ``tf.distribute.MirroredStrategy`` / ``MultiWorkerMirroredStrategy``
  (``TF_CONFIG``) on TensorFlow, ``keras.distribution.DataParallel`` on JAX;
* an atomic checkpoint at the end of every epoch and ``resume=True``, which continues a run
  killed at any moment from the last checkpoint with the same optimizer state, epoch,
  learning-rate schedule and data order, and ends after the same number of optimizer steps;
* an output folder (see :func:`train`).
"""

from keras_attention.training.callbacks import (CHECKPOINT_RE, EpochCheckpoint, RunMonitor,
                                                list_checkpoints, plot_history, read_history)
from keras_attention.training.config import (DISTRIBUTE, OPTIMIZERS, PRECISIONS, TrainConfig,
                                             load_recipe)
from keras_attention.training.distribute import hardware_description, make_strategy
from keras_attention.training.optim import (StepCountingLossScaleOptimizer, apply_l2, build_optimizer,
                                            decay_variables, make_schedule)
from keras_attention.training.run import train

__all__ = ["CHECKPOINT_RE", "DISTRIBUTE", "EpochCheckpoint", "OPTIMIZERS", "PRECISIONS", "RunMonitor",
           "StepCountingLossScaleOptimizer", "TrainConfig", "apply_l2", "build_optimizer",
           "decay_variables", "hardware_description", "list_checkpoints", "load_recipe",
           "make_schedule", "make_strategy", "plot_history", "read_history", "train"]

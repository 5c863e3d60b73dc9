"""Optimizer, learning-rate schedule and weight decay of a training run.

* Schedule: Keras's ``CosineDecay`` with a linear warmup (``warmup_target``,
  ``warmup_steps``): per optimizer step, linear from ``warmup_init_lr`` to ``lr`` over the
  warmup, then cosine down to ``final_lr`` (SGDR without restarts, Loshchilov & Hutter 2017;
  warmup as Goyal et al. 2017).
* Weight decay on kernels only (BatchNorm/LayerNorm parameters and biases, i.e. every
  variable with fewer than two dimensions, are skipped), in one of two forms:

  - ``"l2"`` (default for SGD): classic L2 regularisation, ``wd/2 * ||w||^2`` added to the
    loss, so its gradient ``wd * w`` goes through momentum, as in the ResNet paper's recipe
    (He et al. 2016: SGD, momentum 0.9, weight decay 1e-4) and PyTorch's
    ``SGD(weight_decay=...)``;
  - ``"decoupled"`` (default for AdamW; Loshchilov & Hutter 2019): Keras's optimizer
    ``weight_decay``, ``w -= lr * wd * w`` after the update, outside momentum/Adam
    statistics. For SGD with momentum ``m`` the same strength needs roughly
    ``wd_decoupled = wd_l2 / (1 - m)``; the values are not interchangeable, which is why
    the mode is explicit in every recipe.

* ``mixed_float16``: :class:`StepCountingLossScaleOptimizer`, Keras's dynamic loss scaling
  with one fix: a step skipped because its gradients overflowed still counts as a step.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_attention.training.config import PRECISIONS, TrainConfig


def make_schedule(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.schedules.CosineDecay:
    """The per-step learning-rate schedule of ``cfg`` (Keras ``CosineDecay`` with warmup)."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.warmup_init_lr if warmup else cfg.lr,
        decay_steps=max(total - warmup, 1), alpha=cfg.final_lr / cfg.lr,
        warmup_target=cfg.lr if warmup else None, warmup_steps=warmup)


def decay_variables(model: keras.Model) -> list:
    """Trainable variables that get weight decay: kernels (ndim >= 2); not norms or biases."""
    return [v for v in model.trainable_variables if len(v.shape) >= 2]


class _SumRegularizer:
    def __init__(self, *parts):
        self.parts = parts

    def __call__(self, x):
        return sum(p(x) for p in self.parts)


def apply_l2(model: keras.Model, weight_decay: float) -> int:
    """Adds ``weight_decay / 2 * ||w||^2`` to the loss for every decayed kernel.

    Uses the variables' ``regularizer`` slot; a regularizer already there (e.g. NAM's L1 on
    its BatchNorm scales) is kept and summed. Returns the number of variables.
    """
    variables = decay_variables(model)
    l2 = keras.regularizers.L2(weight_decay / 2.0)
    for v in variables:
        previous = v.regularizer
        v.regularizer = l2 if previous is None else _SumRegularizer(previous, l2)
    return len(variables)


@keras.saving.register_keras_serializable(package="keras_attention")
class StepCountingLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras's ``LossScaleOptimizer`` whose ``iterations`` also count skipped steps.

    Keras's dynamic loss scaling skips the update of a step whose gradients overflowed
    and halves the scale, but does not advance ``iterations`` (the inner optimizer's
    step counter). The learning-rate schedule then falls behind by one step per overflow,
    and a resumed run cannot check that its checkpoint holds ``epochs x steps`` steps.
    Here a skipped step advances ``iterations`` too (weights and moments untouched), on
    every backend: the stateful path (TensorFlow, PyTorch) and the stateless one (JAX).
    """

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.inner_optimizer.iterations.assign_add(1)

    def _stateless_handle_non_finite_grads(self, optimizer_variables, trainable_variables):
        trainable_variables, new_variables = super()._stateless_handle_non_finite_grads(
            optimizer_variables, trainable_variables)
        iterations = self.inner_optimizer.iterations
        return trainable_variables, [
            ops.add(value, ops.cast(1, value.dtype)) if variable is iterations else value
            for variable, value in zip(self.variables, new_variables)]


def build_optimizer(cfg: TrainConfig, model: keras.Model, steps_per_epoch: int):
    """The optimizer of ``cfg`` with its schedule (see the module docstring).

    Weight decay is excluded from every variable with fewer than two dimensions
    (BatchNorm/LayerNorm scales and offsets, biases); with ``weight_decay_mode="l2"`` the
    optimizer has no decay of its own (see :func:`apply_l2`). Under ``mixed_float16`` it is
    wrapped in :class:`StepCountingLossScaleOptimizer` (``compile``'s ``auto_scale_loss``
    then leaves it as it is).
    """
    schedule = make_schedule(cfg, steps_per_epoch)
    decoupled = cfg.weight_decay if (cfg.wd_mode == "decoupled" and cfg.weight_decay > 0) else None
    common = dict(learning_rate=schedule, weight_decay=decoupled,
                  global_clipnorm=cfg.grad_clip_norm)
    if cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    else:
        opt = keras.optimizers.AdamW(beta_1=cfg.beta_1, beta_2=cfg.beta_2,
                                     **{**common, "weight_decay": decoupled or 0.0})
    if decoupled or cfg.optimizer == "adamw":
        skip = [v for v in model.trainable_variables if len(v.shape) < 2]
        opt.exclude_from_weight_decay(var_list=skip)
    if PRECISIONS[cfg.mixed_precision] == "mixed_float16":
        opt = StepCountingLossScaleOptimizer(opt, initial_scale=cfg.initial_loss_scale)
    return opt

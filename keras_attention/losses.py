"""Losses of the hard-attention models' training procedures (``keras.ops`` only, float32).

Used by the models' ``compute_loss`` (e.g. :class:`keras_attention.models.saccader.Saccader`),
so they run on every backend; each is a plain function of tensors and is unit-tested on its
own.

Reference: google-research ``saccader/losses.py`` (``reinforce_loss_discrete``,
``saccader_pretraining_loss``); Williams, "Simple statistical gradient-following algorithms
for connectionist reinforcement learning", Machine Learning 8, 1992 (REINFORCE).
"""

from __future__ import annotations

from keras import ops


def _log_prob(logits, actions):
    """``log softmax(logits)[actions]``: logits ``(..., A)``, int actions ``(...)`` -> ``(...)``."""
    logits = ops.cast(logits, "float32")
    onehot = ops.one_hot(ops.cast(actions, "int32"), logits.shape[-1], dtype="float32")
    return ops.sum(ops.log_softmax(logits, axis=-1) * onehot, axis=-1)


def class_indices(y, num_classes: int):
    """Integer labels ``(N,)`` from sparse labels (``(N,)``/``(N, 1)``) or one-hot / smoothed ``(N, K)``."""
    if len(y.shape) >= 2 and y.shape[-1] == num_classes and num_classes > 1:
        return ops.cast(ops.argmax(y, axis=-1), "int32")
    return ops.cast(ops.reshape(y, (-1,)), "int32")


def correct_prediction_rewards(logits, labels):
    """Reward 1 where ``argmax(logits) == labels``, else 0: ``(N, K)``, ``(N,)`` -> float32 ``(N,)``."""
    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return ops.cast(ops.equal(predicted, ops.cast(labels, "int32")), "float32")


def reinforce_loss(location_logits, actions, rewards):
    """REINFORCE for discrete actions with the batch-mean reward as baseline.

    ``loss = -mean_{n,t} (r_n - mean(r)) * log p(a_{n,t})``; the advantage is a constant
    (no gradient), so the gradient is that of the policy only, and it is zero when every
    reward in the batch is the same. As ``reinforce_loss_discrete`` with one reward per
    example for all its steps.

    Args:
        location_logits: ``(N, T, A)`` logits of the action distribution at each step
            (the distribution the actions were sampled from, masks included).
        actions: ``(N, T)`` int sampled actions.
        rewards: ``(N,)`` rewards.

    Returns:
        Scalar float32 loss.
    """
    rewards = ops.stop_gradient(ops.cast(rewards, "float32"))
    advantages = ops.stop_gradient(rewards - ops.mean(rewards))
    return -ops.mean(advantages[:, None] * _log_prob(location_logits, actions))


def location_pretraining_loss(location_logits, target_cells):
    """Cross-entropy between each step's location distribution and a target cell.

    The Saccader's location pretraining: the targets are the ``ordered_logits`` policy's cells
    (the top cells of the predicted class's logit map, in order), one per step.

    Args:
        location_logits: ``(N, T, A)`` location logits of the learned policy.
        target_cells: ``(N, T)`` int target cells.

    Returns:
        Scalar float32 mean cross-entropy over the batch and the steps.
    """
    return -ops.mean(_log_prob(location_logits, ops.stop_gradient(ops.convert_to_tensor(target_cells, "int32"))))

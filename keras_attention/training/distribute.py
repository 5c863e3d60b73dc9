"""Devices and distribution: TensorFlow strategies, JAX data parallelism, logical CPUs."""

from __future__ import annotations

import os
import platform

import keras

from keras_attention._errors import InvalidInputError
from keras_attention.training.config import DISTRIBUTE


def configure_logical_cpus(n: int | None):
    """Splits the first CPU into ``n`` logical devices (TensorFlow; before any TF op)."""
    if not n or n <= 1 or keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as err:
        if len(tf.config.list_logical_devices("CPU")) != n:
            raise RuntimeError(f"Could not split the CPU into {n} logical devices: TensorFlow was "
                               f"already initialised ({err}). Start a new process.") from err


def make_strategy(distribute: str):
    """``(tf.distribute strategy or None, number of replicas)``; sets the JAX distribution."""
    backend = keras.backend.backend()
    if distribute == "off":
        return None, 1
    if distribute in ("mirrored", "multiworker"):
        if backend != "tensorflow":
            raise InvalidInputError(f"--distribute {distribute} needs KERAS_BACKEND=tensorflow (running "
                             f"{backend}); on JAX use --distribute data_parallel.")
        import tensorflow as tf
        if distribute == "multiworker":
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
            strategy = tf.distribute.MirroredStrategy(devices=devices)
        return strategy, strategy.num_replicas_in_sync
    if distribute == "data_parallel":
        if backend != "jax":
            raise InvalidInputError(f"--distribute data_parallel needs KERAS_BACKEND=jax (running "
                             f"{backend}); on TensorFlow use --distribute mirrored.")
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return None, len(devices)
    raise InvalidInputError(f"distribute must be one of {DISTRIBUTE}; received {distribute!r}.")


def chief_worker(strategy) -> tuple[bool, int]:
    """``(is_chief, task_id)`` under MultiWorkerMirroredStrategy (``TF_CONFIG``); else chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return chief, task_id


def hardware_description(num_replicas: int = 1) -> str:
    """One line for model cards: the accelerators (or CPU) the backend sees, and replicas."""
    backend = keras.backend.backend()
    gpus = []
    if backend == "tensorflow":
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
    elif backend == "jax":
        import jax
        gpus = [d for d in jax.devices() if d.platform == "gpu"]
    elif backend == "torch":
        import torch
        gpus = list(range(torch.cuda.device_count()))
    if gpus:
        name = _gpu_name(backend)
        return f"{len(gpus)}x {name or 'GPU'} ({backend}), {num_replicas} replica(s)"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()} ({backend})"




def _gpu_name(backend: str) -> str | None:
    try:
        if backend == "jax":
            import jax
            return jax.devices()[0].device_kind
        if backend == "torch":
            import torch
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a name is a nicety
        return None
    return None

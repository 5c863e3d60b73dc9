"""keras-attention: a Keras 3 model zoo of attention CNNs with pretrained weights."""

from keras_attention._version import __version__  # noqa: F401


def _quiet_command_line() -> None:
    """The ``keras-attention`` command hides the backends' C++ start-up logs unless ``--verbose``.

    TensorFlow 2.21 writes its oneDNN, CUDA-stub and cuInit lines through absl before its
    log level applies, so ``TF_CPP_MIN_LOG_LEVEL`` alone does not silence them: Keras (and
    the backend) is imported, and TensorFlow's devices listed, with the process's stderr
    (file descriptor 2) pointed at ``os.devnull``. This has to happen here, before Keras is
    imported, because the command's module is reached through this package. Importing the
    package as a library changes nothing; an import error is raised after stderr is back.
    """
    import os
    import sys
    argv = list(getattr(sys, "orig_argv", sys.argv))
    command_line = (os.path.basename(sys.argv[0]) == "keras-attention"
                    or "keras_attention.cli" in argv)
    if not command_line or "--verbose" in argv or "keras" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import keras
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf
            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _default_backend() -> None:
    """Chooses an installed Keras backend when none is configured that could load.

    Keras defaults to TensorFlow, which is an extra here (``pip install keras-attention[jax]``
    installs none): without ``KERAS_BACKEND``, and when the backend of ``keras.json``
    (TensorFlow if there is none) is not installed, use JAX, else PyTorch. An explicit
    ``KERAS_BACKEND`` or an installed configured backend is never overridden.
    """
    import importlib.util
    import json
    import os
    import sys
    if "KERAS_BACKEND" in os.environ or "keras" in sys.modules:
        return
    config = os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")),
                          "keras.json")
    try:
        with open(config, encoding="utf-8") as f:
            wanted = json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError):
        wanted = "tensorflow"
    if importlib.util.find_spec(wanted) is not None:
        return
    for backend in ("jax", "torch", "tensorflow"):
        if importlib.util.find_spec(backend) is not None:
            os.environ["KERAS_BACKEND"] = backend
            return


_default_backend()
_quiet_command_line()

from keras_attention import layers  # noqa: E402,F401  (registers the serializable layers)
from keras_attention import models  # noqa: E402,F401  (registers the architectures)
from keras_attention._api import list_models  # noqa: E402
from keras_attention.registry import create_model  # noqa: E402
from keras_attention.weights import get_pretrained_cfg, list_pretrained, load  # noqa: E402

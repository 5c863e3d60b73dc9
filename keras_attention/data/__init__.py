"""Datasets and input pipelines; nothing here needs TensorFlow except the ``tf.data`` path.

* :func:`load_source` opens a split of a prepared dataset, a class folder or a TFDS dataset
  as an :class:`ImageSource`;
* :mod:`~keras_attention.data.loader` (grain + NumPy/Pillow, every backend) and
  :mod:`~keras_attention.data.tf_pipeline` (``tf.data``) turn a source into batches with the
  same recipes; :func:`pipeline_module` picks one;
* :mod:`~keras_attention.data.prepared` is the compact prepared-dataset format.
"""

from keras_attention.data.catalog import PIPELINES, load_source, pipeline_module, resolve_pipeline
from keras_attention.data.folder import find_corrupt_images, load_folder
from keras_attention.data.loader import eval_dataset, train_dataset
from keras_attention.data.prepared import (is_prepared, open_prepared, prepare_folder, prepare_tfds,
                                           write_prepared)
from keras_attention.data.preprocessing import (CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD,
                                                Preprocessing)
from keras_attention.data.source import ImageSource, array_source

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "PIPELINES", "ImageSource",
           "Preprocessing", "array_source", "eval_dataset", "find_corrupt_images", "is_prepared",
           "load_folder", "load_source", "open_prepared", "pipeline_module", "prepare_folder",
           "prepare_tfds", "resolve_pipeline", "train_dataset", "write_prepared"]

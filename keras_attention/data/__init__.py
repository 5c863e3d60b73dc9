"""Input pipelines: TFDS datasets and class folders -> augmented ``tf.data`` batches.

TensorFlow is used here (and only here, on the training side); models stay
backend-agnostic.
"""

from keras_attention.data.folder import find_corrupt_images, load_folder
from keras_attention.data.pipeline import (CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD,
                                           Preprocessing, eval_dataset, load_source, train_dataset)
from keras_attention.data.source import ImageSource
from keras_attention.data.tfds import load_tfds

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "ImageSource",
           "Preprocessing", "eval_dataset", "find_corrupt_images", "load_folder", "load_source",
           "load_tfds", "train_dataset"]

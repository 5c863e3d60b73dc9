"""Pretrained weights: the ``weights/`` registry, resolving, verifying, loading, publishing.

Split by concern, as timm splits ``_registry``/``_pretrained``/``_builder``/``_hub``; each
module imports only the ones above it in this list:

- :mod:`._registry`: the entry schema and its validation, the search path
  (``KERAS_ATTENTION_WEIGHTS_PATH``, the wheel's ``_weights``, a checkout's ``weights/``),
  lookup by ``arch`` / ``arch.tag``, labels files, :func:`validate_registry`, the errors;
- :mod:`._entry`: the one ``pretrained.json`` builder and the table of papers;
- :mod:`._download`: Hugging Face cache, offline mode, SHA-256 / ETag verification,
  :func:`resolve_file`;
- :mod:`._resolve`: the one resolver of model names, ``hf://`` addresses, published
  folders, training runs and model files (:func:`resolve_source`, :func:`get_pretrained_cfg`);
- :mod:`._builder`: :func:`load`, the ``keras`` and ``timm`` format loaders, the head swap;
- :mod:`._publish`: model cards, the Hub folder, upload, revision pinning;
- :mod:`._trained`: a training run's ``pretrained.json`` and the run as a registry entry.

The schema of ``pretrained.json`` and the resolving order are described in ``weights/README.md``.
"""

from keras_attention._files import sha256_file
from keras_attention.weights._builder import (FORMAT_LOADERS, format_loader, load, register_weights_format,
                                              transfer_weights)
from keras_attention.weights._download import fetch_verified, resolve_file, resolve_files
from keras_attention.weights._entry import PAPERS, paper_for, pretrained_entry, related_papers_for
from keras_attention.weights._publish import (PublishError, build_hub_folder, build_model_card, card_data,
                                              publish, save_hub_folder, update_registry_revision,
                                              upload_hub_folder)
from keras_attention.weights._registry import (DEFAULT_CLASSIFIER, KERAS_WEIGHTS_FILENAME, PRETRAINED_FILENAME,
                                               SCHEMA_VERSION, WEIGHTS_PATH_ENV, ChecksumError, FolderExistsError,
                                               ModelNotFoundError, PretrainedEntry, RegistryError, WeightsError,
                                               WeightsNotFoundError, entry_cfg, find_pretrained, list_pretrained,
                                               validate_pretrained_cfg, validate_registry, weights_dirs)
from keras_attention.weights._resolve import (ModelSource, get_pretrained_cfg, is_local_path, parse_hf_address,
                                              resolve_source, source_cfg)
from keras_attention.weights._trained import (add_trained_weights, default_weights_dir, pretrained_config,
                                              read_label_descriptions, recipe_ref)

__all__ = [
    "DEFAULT_CLASSIFIER", "FORMAT_LOADERS", "KERAS_WEIGHTS_FILENAME", "PAPERS", "PRETRAINED_FILENAME",
    "SCHEMA_VERSION", "WEIGHTS_PATH_ENV", "ChecksumError", "FolderExistsError", "ModelNotFoundError",
    "ModelSource", "PretrainedEntry", "PublishError", "RegistryError", "WeightsError", "WeightsNotFoundError",
    "add_trained_weights", "build_hub_folder", "build_model_card", "card_data", "default_weights_dir",
    "entry_cfg", "fetch_verified", "find_pretrained", "format_loader", "get_pretrained_cfg", "is_local_path",
    "list_pretrained", "load", "paper_for", "parse_hf_address", "pretrained_config", "pretrained_entry",
    "publish", "read_label_descriptions", "recipe_ref", "register_weights_format", "related_papers_for", "resolve_file", "resolve_files",
    "resolve_source", "save_hub_folder", "sha256_file", "source_cfg", "transfer_weights",
    "update_registry_revision", "upload_hub_folder", "validate_pretrained_cfg", "validate_registry",
    "weights_dirs",
]
